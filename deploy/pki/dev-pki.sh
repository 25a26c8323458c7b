#!/usr/bin/env bash
# Makes a development PKI for carebroker in DIR (default ./var/pki).
# NOT for production: keys are unencrypted and the CA key sits beside them.
#
#   deploy/pki/dev-pki.sh DIR
#
# Writes ca.crt, crl.pem, crl-expired.pem (the same list, past its
# next-update time) and NAME.crt + NAME.key for:
#   server       the broker (SAN DNS:localhost, IP:127.0.0.1, IP:::1)
#   server-next  a second broker certificate, for rotation
#   RR8 RH8      NHS trusts              role agency
#   Y06601       GP practice             role agency
#   503 511      councils                role agency
#   X26          NHS England             role agency
#   ig-officer   IG officer at 503       role ig-officer
#   operator     broker operator at X26  role operator
# and, for negative tests:
#   expired      valid dates in the past (RR8, agency)
#   future       not valid until a future date (RR8, agency)
#   revoked      listed in crl.pem (RH8, agency)
#   rogue        signed by a different CA, rogue-ca.crt (RR8, agency)
# and the audit log's keys: audit-signing.key (Ed25519, signs tree heads),
# audit-signing.pub (what IG officers verify with) and audit-subject.key
# (32 random bytes: the HMAC key for NHS numbers in the log).
#
# Identity (see README.md here): the organisation's ODS code is the
# subjectAltName URI urn:nhs-uk:addressing:ods:<ODS>; the role is the
# subject's OU. Keys are ECDSA P-256. Re-running keeps an existing PKI.
set -euo pipefail
dir=${1:-./var/pki}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [[ -f $dir/ca.crt && -f $dir/crl.pem && -f $dir/crl-expired.pem && -f $dir/server-next.crt && -f $dir/rogue.crt &&
      -f $dir/audit-subject.key ]]; then
  echo "dev PKI already in $dir"
  exit 0
fi
command -v openssl >/dev/null || { echo "dev-pki.sh: openssl is required (apt-get install openssl)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A CA database so that `openssl ca` can set arbitrary dates and revoke.
make_ca() {  # make_ca NAME SUBJECT
  local name=$1 subj=$2 cadir=$work/$1
  mkdir -p "$cadir/new"
  : >"$cadir/index.txt"
  echo 1000 >"$cadir/serial"
  echo 1000 >"$cadir/crlnumber"
  cat >"$cadir/openssl.cnf" <<CNF
[ ca ]
default_ca = this
[ this ]
dir = $cadir
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $dir/$name.crt
private_key = $dir/$name.key
default_md = sha256
default_days = 825
default_crl_days = 3650
policy = anything
unique_subject = no
copy_extensions = none
[ anything ]
commonName = supplied
organizationName = optional
organizationalUnitName = optional
[ v3_ca ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
  newkey "$dir/$name.key"
  openssl req -new -x509 -key "$dir/$name.key" -subj "$subj" -days 3650 \
    -config "$cadir/openssl.cnf" -extensions v3_ca -out "$dir/$name.crt" 2>/dev/null
}

issue() {  # issue CA NAME SUBJECT SAN [extra openssl ca args...]
  local ca=$1 name=$2 subj=$3 san=$4
  shift 4
  newkey "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$work/$name.csr" 2>/dev/null
  cat >"$work/$name.ext" <<EXT
[ leaf ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = ${EKU:-clientAuth}
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
  openssl ca -batch -notext -config "$work/$ca/openssl.cnf" -extfile "$work/$name.ext" -extensions leaf \
    -in "$work/$name.csr" -out "$dir/$name.crt" "$@" 2>/dev/null
}

agency() {  # agency FILE ODS ORG_NAME ROLE [extra args...]
  local file=$1 ods=$2 org=$3 role=$4
  shift 4
  issue "${CA:-ca}" "$file" "/O=$org/OU=$role/CN=$file" "URI:urn:nhs-uk:addressing:ods:$ods" "$@"
}

make_ca ca "/O=carebroker development/CN=carebroker dev CA"
make_ca rogue-ca "/O=somebody else/CN=rogue CA"

EKU=serverAuth issue ca server "/O=carebroker development/OU=server/CN=localhost" \
  "DNS:localhost, IP:127.0.0.1, IP:::1"
# A second server certificate, to show a reload rotating it.
EKU=serverAuth issue ca server-next "/O=carebroker development/OU=server/CN=localhost (next)" \
  "DNS:localhost, IP:127.0.0.1, IP:::1"
agency RR8 RR8 "Leeds Teaching Hospitals NHS Trust" agency
agency RH8 RH8 "Royal Devon University Healthcare NHS Foundation Trust" agency
agency Y06601 Y06601 "Example GP practice" agency
agency 503 503 "Lincolnshire County Council" agency
agency 511 511 "Example council" agency
agency X26 X26 "NHS England" agency
agency ig-officer 503 "Lincolnshire County Council" ig-officer
agency operator X26 "NHS England" operator
agency expired RR8 "Leeds Teaching Hospitals NHS Trust" agency -startdate 20200101000000Z -enddate 20210101000000Z
agency future RR8 "Leeds Teaching Hospitals NHS Trust" agency -startdate 20990101000000Z -enddate 20991231000000Z
agency revoked RH8 "Royal Devon University Healthcare NHS Foundation Trust" agency
CA=rogue-ca agency rogue RR8 "Leeds Teaching Hospitals NHS Trust" agency

openssl ca -config "$work/ca/openssl.cnf" -revoke "$dir/revoked.crt" -crl_reason keyCompromise 2>/dev/null
openssl ca -config "$work/ca/openssl.cnf" -gencrl -out "$dir/crl.pem" 2>/dev/null
# The same list, long past its next-update time (tls.crl_expired).
openssl ca -config "$work/ca/openssl.cnf" -gencrl -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z \
  -out "$dir/crl-expired.pem" 2>/dev/null

openssl genpkey -algorithm ed25519 -out "$dir/audit-signing.key" 2>/dev/null
openssl pkey -in "$dir/audit-signing.key" -pubout -out "$dir/audit-signing.pub" 2>/dev/null
openssl rand -out "$dir/audit-subject.key" 32

# The CA keys stay beside the PKI so a developer can issue more; protect them.
chmod 600 "$dir"/*.key
chmod 644 "$dir"/*.crt "$dir"/crl*.pem "$dir/audit-signing.pub"
echo "dev PKI written to $dir"
