// Stages the pod that check.mjs described, as the kubelet would lay it out,
// and prints the bash script that mounts it and runs its container (run by
// ../kubernetes_test.sh inside `unshare --mount`, as root):
//
//   node pod.mjs POD_JSON STAGE IMAGE_ROOT SOURCES_JSON > run-pod.sh
//
// IMAGE_ROOT is the package's files (DESTDIR of cmake --install): they are
// laid over /usr and /etc read-only, as the image's are. SOURCES_JSON maps
// "secret/NAME" and "configMap/NAME" to {key: file}: what an operator puts in
// the Secrets and ConfigMaps the manifests do not hold (deploy/kubernetes/
// README.md). ConfigMaps the manifests hold come from the manifests unless
// SOURCES_JSON names them (the PostgreSQL test's database address). Each
// volume is laid out as the kubelet does: a timestamped folder, `..data`
// pointing at it and each key a link through `..data` (so a changed
// ConfigMap swaps one link); Secret files root-owned, group fsGroup, with
// the volume's defaultMode; data volumes root-owned, group fsGroup, 2770.
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";

const [podFile, stage, imageRoot, sourcesFile] = process.argv.slice(2);
const pod = JSON.parse(readFileSync(podFile, "utf8"));
const sources = JSON.parse(readFileSync(sourcesFile, "utf8"));
const q = (s) => `'${String(s).replaceAll("'", "'\\''")}'`;
const fail = (what) => {
  console.error(`pod.mjs: ${what}`);
  process.exit(1);
};

// The image's /etc/carebroker and every mount point, under the overlays.
const lower = { "/etc": path.join(stage, "etc"), "/var/lib": path.join(stage, "var-lib") };
for (const dir of Object.values(lower)) mkdirSync(dir, { recursive: true });
for (const m of pod.mounts) {
  const top = Object.keys(lower).find((t) => m.mountPath.startsWith(`${t}/`));
  if (!top) fail(`mount ${m.mountPath} is outside /etc and /var/lib, which this test stages`);
  mkdirSync(path.join(lower[top], m.mountPath.slice(top.length)), { recursive: true });
}

const script = [
  "set -euo pipefail",
  "# The image's files over the host's (both Debian 12), read-only.",
  `mount -t overlay overlay -o lowerdir=${path.join(imageRoot, "usr")}:/usr /usr`,
  `mount -t overlay overlay -o lowerdir=${lower["/etc"]}:${path.join(imageRoot, "etc")}:/etc /etc`,
  `mount -t overlay overlay -o lowerdir=${lower["/var/lib"]}:/var/lib /var/lib`,
];

pod.mounts.forEach((m, i) => {
  const dir = path.join(stage, "volumes", String(i));
  mkdirSync(dir, { recursive: true });
  if (m.type === "emptyDir" || m.type === "persistentVolume") {
    chownSync(dir, 0, pod.fsGroup);
    chmodSync(dir, 0o2770);
  } else {
    const kind = m.type === "secret" ? "secret" : "configMap";
    let files = sources[`${kind}/${m.name}`] ?? (m.data && Object.fromEntries(Object.keys(m.data).map((k) => [k, null])));
    if (!files) fail(`the pod mounts ${kind} ${m.name}, and nothing says what is in it`);
    if (m.items) {
      files = Object.fromEntries(m.items.map(({ key, path: p }) => {
        if (!(key in files)) fail(`${kind} ${m.name} has no key ${key}`);
        return [p, files[key]];
      }));
    }
    const data = path.join(dir, "..2026_01_01_00_00_00.1");
    mkdirSync(data);
    for (const [key, from] of Object.entries(files)) {
      const to = path.join(data, key);
      if (from === null) writeFileSync(to, m.data[key]);
      else copyFileSync(from, to);
      chownSync(to, 0, kind === "secret" ? pod.fsGroup : 0);
      chmodSync(to, kind === "secret" ? m.mode : 0o644);
      symlinkSync(`..data/${key}`, path.join(dir, key));
    }
    symlinkSync(path.basename(data), path.join(dir, "..data"));
  }
  script.push(`mount --bind ${q(dir)} ${q(m.mountPath)}`);
  if (m.readOnly) script.push(`mount -o remount,bind,ro ${q(m.mountPath)}`);
});

// The container's environment: what the manifest sets, and nothing else.
const env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];
for (const e of pod.env) {
  if (e.value !== null) env.push(`${e.name}=${e.value}`);
  else {
    const from = sources[`secret/${e.secret}`]?.[e.key];
    if (!from) fail(`env ${e.name} reads secret ${e.secret} key ${e.key}, and nothing says what is in it`);
    env.push(`${e.name}=${readFileSync(from, "utf8").trim()}`);
  }
}
script.push(
  "# Its user and group, fsGroup as a supplementary group, no capabilities.",
  `exec env -i ${env.map(q).join(" ")} setpriv --reuid=${pod.user} --regid=${pod.group} --groups=${pod.fsGroup} ` +
    `--no-new-privs --inh-caps=-all --bounding-set=-all -- ${pod.command.map(q).join(" ")}`,
);
console.log(script.join("\n"));
