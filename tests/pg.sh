#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder,
# listening on 127.0.0.1 only, on a free port, as a non-root user (the
# Debian package's `postgres` when run as root). Sourced by tests/run.sh:
#
#   source tests/pg.sh; pg_start   # exports CB_PG_URI and CB_PG_CA (the server
#                                  # certificate's CA, for TLS), or fails the run
#   ...                            # tests read CB_PG_URI
#   pg_stop                        # stops it and removes the folder
#
# Run directly (`tests/pg.sh`), it starts a cluster, prints its URI and
# waits until interrupted: for running single PostgreSQL tests by hand.

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d && -x $d/initdb ]] || { echo "pg.sh: PostgreSQL server binaries not found (package postgresql)" >&2; return 1; }
  echo "$d"
}

# Runs a command as the cluster's owner.
pg_as_owner() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  local bin port tries
  bin=$(pg_bindir) || return 1
  PG_DIR=$(mktemp -d /tmp/cb-pg.XXXXXX)
  chmod 700 "$PG_DIR"
  [[ $(id -u) == 0 ]] && chown postgres:postgres "$PG_DIR"
  pg_as_owner "$bin/initdb" -D "$PG_DIR/data" -U carebroker -A trust -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; echo "pg.sh: initdb failed" >&2; return 1; }
  # TLS: a throwaway CA and a server certificate for 127.0.0.1, so the
  # store's sslmode and sslrootcert are tested against a real TLS server.
  (
    cd "$PG_DIR" &&
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=carebroker test PostgreSQL CA" -keyout ca.key -out ca.crt &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1\n' >server.ext &&
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext \
        -out server.crt &&
      chmod 600 server.key &&
      if [[ $(id -u) == 0 ]]; then chown postgres:postgres server.key server.crt; fi
  ) >"$PG_DIR/tls.log" 2>&1 || { cat "$PG_DIR/tls.log" >&2; echo "pg.sh: cannot make the TLS certificates" >&2; return 1; }
  # A free port: try a few at random above the ephemeral range's start.
  for tries in 1 2 3 4 5 6 7 8; do
    port=$((20000 + RANDOM % 20000))
    if pg_as_owner "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$PG_DIR -c max_connections=200 \
         -c ssl=on -c ssl_cert_file=$PG_DIR/server.crt -c ssl_key_file=$PG_DIR/server.key" \
      start >/dev/null 2>&1; then
      export PG_BIN=$bin PG_DIR CB_PG_CA=$PG_DIR/ca.crt
      export CB_PG_URI="postgresql://carebroker@127.0.0.1:$port/postgres"
      echo "pg.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)"
      return 0
    fi
  done
  cat "$PG_DIR/server.log" >&2 2>/dev/null || true
  echo "pg.sh: PostgreSQL did not start" >&2
  return 1
}

pg_stop() {
  [[ -n ${PG_DIR:-} && -d $PG_DIR ]] || return 0
  pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
  unset PG_DIR CB_PG_URI CB_PG_CA
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  pg_start
  trap pg_stop EXIT
  echo "export CB_PG_URI=$CB_PG_URI CB_PG_CA=$CB_PG_CA"
  echo "(Ctrl-C stops it)"
  while sleep 3600; do :; done
fi
