// NHSDigital's nhs-mesh-client (npm, pinned by package-lock.json), unchanged,
// against carebroker's MESH front door over mutual TLS with the dev PKI:
// handshake, send, count, read, acknowledge, a chunked message, a policy
// denial. Run by client_test.sh, which starts the broker and sets:
//   MESH_URL  https://127.0.0.1:PORT     PKI     the dev PKI folder
//   MESH_SHARED_KEY                      MESH_PASSWORDS  folder of MAILBOX.pw
//   CHUNKED_MB  size of the chunked message (MB)
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import {
  getMessageCount,
  handShake,
  markAsRead,
  readMessage,
  sendChunkedMessage,
  sendMessage,
} from "nhs-mesh-client";
import log from "loglevel";

log.setLevel("WARN");
const env = process.env;
const url = env.MESH_URL;
const sharedKey = env.MESH_SHARED_KEY;
const agent = (name) =>
  new Agent({
    cert: readFileSync(`${env.PKI}/${name}.crt`),
    key: readFileSync(`${env.PKI}/${name}.key`),
    ca: readFileSync(`${env.PKI}/ca.crt`),
    rejectUnauthorized: true, // the broker's certificate is checked too
  });
const mailbox = (id, cert) => ({
  url,
  sharedKey,
  mailboxID: id,
  mailboxPassword: readFileSync(`${env.MESH_PASSWORDS}/${id}.pw`, "utf8").trim(),
  agent: agent(cert),
});
const trust = mailbox("RR8HC001", "RR8");
const council = mailbox("503HC001", "503");

let checks = 0;
const check = (what, fn) => {
  fn();
  checks++;
  console.log(`ok - ${what}`);
};

// Handshake (the client uses GET).
const hs = await handShake(trust);
check("handshake", () => assert.equal(hs.status, 200, `handshake answered ${hs.status ?? hs.message}`));

// Send a small message to the council's mailbox (workflow API-DOCS-TEST, the client's default).
const sent = await sendMessage({ ...trust, mailboxTarget: council.mailboxID, message: "This is a test" });
const id = sent.data.message_id;
check("send", () => {
  assert.equal(sent.status, 202);
  assert.match(id, /^[0-9a-f]{32}$/);
});

// Count (the client reads the v2 inbox listing).
const count = await getMessageCount(council);
check("count", () => {
  assert.equal(count.status, 200);
  assert.equal(count.data.approx_inbox_count, 1);
  assert.deepEqual(count.data.messages, [id]);
});

// Read, then acknowledge.
const read = await readMessage({ ...council, messageID: id });
check("read", () => {
  assert.equal(read.status, 200);
  assert.equal(read.data, "This is a test");
  assert.equal(read.headers["mex-from"], "RR8HC001");
  assert.equal(read.headers["mex-messagetype"], "DATA");
  assert.equal(read.headers["mex-filename"], "message.txt");
});
const ack = await markAsRead({ ...council, message: id });
check("acknowledge", () => assert.equal(ack.status, 200));
const after = await getMessageCount(council);
check("inbox empty after the acknowledgement", () => assert.deepEqual(after.data.messages, []));

// A gzip-compressed send (the client's `compressed` option) arrives decompressed.
const gz = await sendMessage({ ...trust, mailboxTarget: council.mailboxID, message: "compressed", compressed: true });
const gzRead = await readMessage({ ...council, messageID: gz.data.message_id });
check("compressed send", () => assert.equal(gzRead.data, "compressed"));
await markAsRead({ ...council, message: gz.data.message_id });

// A policy denial: no agreement covers the workflow. The client throws
// axios's error; MESH's 417 body carries carebroker's reason.
let denied;
try {
  await sendMessage({ ...trust, mailboxTarget: council.mailboxID, message: "x", workFlowId: "NOT_AGREED" });
} catch (e) {
  denied = e.response;
}
check("policy denial", () => {
  assert.equal(denied?.status, 417);
  assert.equal(denied.data.detail[0].code, "16");
  assert.equal(denied.data.detail[0].reason, "NO_AGREEMENT");
});

// A chunked message: the client splits it into 10 MB chunks, gzips each and
// posts them in order; the recipient reads every chunk back.
const mb = Number(env.CHUNKED_MB ?? "0");
if (mb > 0) {
  const line = "RR8,Leeds Teaching Hospitals NHS Trust,synthetic row for a chunked MESH message test\n";
  const body = Buffer.from(line.repeat(Math.ceil((mb * 1024 * 1024) / line.length)).slice(0, mb * 1024 * 1024));
  const digest = createHash("sha256").update(body).digest("hex");
  const started = Date.now();
  const chunked = await sendChunkedMessage({ ...trust, mailboxTarget: council.mailboxID, fileContent: body });
  check(`chunked send of ${mb} MB`, () => assert.equal(chunked.status, 202, chunked.message));
  const listed = await getMessageCount(council);
  assert.equal(listed.data.messages.length, 1);
  const got = await readMessage({ ...council, messageID: listed.data.messages[0] });
  const seconds = (Date.now() - started) / 1000;
  check(`chunked read of ${mb} MB`, () => {
    assert.equal(got.status, 206, "the first chunk of several answers 206");
    assert.equal(Buffer.byteLength(got.data), body.length);
    assert.equal(createHash("sha256").update(got.data).digest("hex"), digest);
  });
  console.log(`chunked ${mb} MB sent and read back in ${seconds.toFixed(1)} s`);
  await markAsRead({ ...council, message: listed.data.messages[0] });
}
console.log(`${checks} checks passed`);
