// Load client for carebroker's MESH front door (tests/bench/mesh_bench.sh):
// Node's https with keep-alive and mutual TLS, an NHSMESH token per request.
//   small: COUNT messages of SIZE bytes sent with CONCURRENCY requests in
//          flight, then listed, downloaded and acknowledged the same way;
//          msgs/s for each phase and for the whole cycle.
//   large: one message of LARGE_MB in chunks of CHUNK_MB (each a new buffer
//          of the same bytes, so the client holds one chunk), uploaded and
//          downloaded chunk by chunk; MB/s each way.
// Bounded by COUNT and by TIMEOUT_S (the run fails past it).
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";

const env = process.env;
const url = new URL(env.MESH_URL);
const secret = env.MESH_SHARED_KEY;
const count = Number(env.COUNT ?? 2000);
const size = Number(env.SIZE ?? 1024);
const concurrency = Number(env.CONCURRENCY ?? 16);
const largeMb = Number(env.LARGE_MB ?? 0);
const chunkMb = Number(env.CHUNK_MB ?? 100);
const deadline = Date.now() + 1000 * Number(env.TIMEOUT_S ?? 600);
// The broker's peak resident memory so far (VmHWM, MB), when BROKER_PID is given.
const peakMb = () => {
  if (!env.BROKER_PID) return "?";
  const m = readFileSync(`/proc/${env.BROKER_PID}/status`, "utf8").match(/VmHWM:\s+(\d+)/);
  return m ? Math.round(Number(m[1]) / 1024) : "?";
};

const party = (mailbox, cert) => ({
  mailbox,
  password: readFileSync(`${env.MESH_PASSWORDS}/${mailbox}.pw`, "utf8").trim(),
  agent: new Agent({
    keepAlive: true,
    maxSockets: concurrency,
    cert: readFileSync(`${env.PKI}/${cert}.crt`),
    key: readFileSync(`${env.PKI}/${cert}.key`),
    ca: readFileSync(`${env.PKI}/ca.crt`),
  }),
});
const trust = party("RR8HC001", "RR8");
const council = party("503HC001", "503");

function token(p) {
  const nonce = randomUUID();
  const ts = new Date().toISOString().replace(/[-:.TZ]/g, "").slice(0, 12);
  const hmac = createHmac("sha256", secret).update(`${p.mailbox}:${nonce}:1:${p.password}:${ts}`).digest("hex");
  return `NHSMESH ${p.mailbox}:${nonce}:1:${ts}:${hmac}`;
}

function call(p, method, path, headers = {}, body = null) {
  if (Date.now() > deadline) throw new Error("TIMEOUT_S passed");
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path,
        method,
        agent: p.agent,
        headers: { accept: "application/vnd.mesh.v2+json", authorization: token(p), ...headers },
      },
      (res) => {
        const parts = [];
        res.on("data", (d) => parts.push(d));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
      },
    );
    req.on("error", reject);
    if (body) req.end(body);
    else req.end();
  });
}

async function pool(n, fn) {
  let next = 0;
  const worker = async () => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

const expect = (r, status, what) => {
  if (r.status !== status) throw new Error(`${what}: ${r.status} ${r.body.toString().slice(0, 300)}`);
  return r;
};
const rate = (n, ms) => ((n * 1000) / ms).toFixed(0);

if (count > 0) {
  const payload = Buffer.alloc(size, "x");
  const send = { "mex-to": council.mailbox, "mex-workflowid": "API-DOCS-TEST", "content-type": "application/octet-stream" };
  const t0 = Date.now();
  await pool(count, async () => expect(await call(trust, "POST", `/messageexchange/${trust.mailbox}/outbox`, send, payload), 202, "send"));
  const t1 = Date.now();
  const ids = [];
  let next = `/messageexchange/${council.mailbox}/inbox?max_results=5000`;
  while (next) {
    const page = JSON.parse(expect(await call(council, "GET", next), 200, "inbox").body);
    ids.push(...page.messages);
    next = page.links.next;
  }
  const t2 = Date.now();
  if (ids.length !== count) throw new Error(`listed ${ids.length} of ${count}`);
  await pool(count, async (i) => {
    const r = expect(await call(council, "GET", `/messageexchange/${council.mailbox}/inbox/${ids[i]}`), 200, "download");
    if (r.body.length !== size) throw new Error("a download is the wrong size");
  });
  const t3 = Date.now();
  await pool(count, async (i) =>
    expect(await call(council, "PUT", `/messageexchange/${council.mailbox}/inbox/${ids[i]}/status/acknowledged`), 200, "ack"));
  const t4 = Date.now();
  console.log(
    `MESH_SMALL count=${count} size=${size} concurrency=${concurrency} send_per_s=${rate(count, t1 - t0)} ` +
      `list_ms=${t2 - t1} download_per_s=${rate(count, t3 - t2)} ack_per_s=${rate(count, t4 - t3)} ` +
      `cycle_per_s=${rate(count, t4 - t0)}`,
  );
}

if (largeMb > 0) {
  const chunks = Math.ceil(largeMb / chunkMb);
  const chunkBytes = chunkMb * 1024 * 1024;
  const chunk = () => Buffer.alloc(chunkBytes, "carebroker chunk ");
  const headers = (n) => ({
    "mex-to": council.mailbox,
    "mex-workflowid": "API-DOCS-TEST",
    "content-type": "application/octet-stream",
    "mex-chunk-range": `${n}:${chunks}`,
  });
  const t0 = Date.now();
  const first = expect(await call(trust, "POST", `/messageexchange/${trust.mailbox}/outbox`, headers(1), chunk()), 202, "chunk 1");
  const id = JSON.parse(first.body).message_id;
  for (let n = 2; n <= chunks; n++) {
    expect(await call(trust, "POST", `/messageexchange/${trust.mailbox}/outbox/${id}/${n}`, headers(n), chunk()), 202, `chunk ${n}`);
  }
  const t1 = Date.now();
  const peakUpload = peakMb();
  let bytes = 0;
  for (let n = 1; n <= chunks; n++) {
    const path = `/messageexchange/${council.mailbox}/inbox/${id}${n === 1 ? "" : `/${n}`}`;
    const r = expect(await call(council, "GET", path), n < chunks ? 206 : 200, `download chunk ${n}`);
    bytes += r.body.length;
  }
  const t2 = Date.now();
  if (bytes !== chunks * chunkBytes) throw new Error(`downloaded ${bytes} bytes of ${chunks * chunkBytes}`);
  expect(await call(council, "PUT", `/messageexchange/${council.mailbox}/inbox/${id}/status/acknowledged`), 200, "ack");
  const mb = (chunks * chunkBytes) / (1024 * 1024);
  console.log(
    `MESH_LARGE mb=${mb} chunks=${chunks} chunk_mb=${chunkMb} upload_mb_per_s=${((mb * 1000) / (t1 - t0)).toFixed(0)} ` +
      `download_mb_per_s=${((mb * 1000) / (t2 - t1)).toFixed(0)} broker_peak_mb_after_upload=${peakUpload} ` +
      `broker_peak_mb_after_download=${peakMb()}`,
  );
}
process.exit(0);
