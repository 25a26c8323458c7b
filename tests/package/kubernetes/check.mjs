// Checks carebroker's Kubernetes manifests and prints, for the test that
// runs them (../kubernetes_test.sh), what the pod would be: its command,
// environment, user and mounts.
//
//   node check.mjs DOCKERFILE KUSTOMIZE_DIR   > pod.json
//
// Every object is validated against the Kubernetes API schema of its kind
// (kubernetes-models); then the parts must fit one another and the image:
// the container runs the image's entrypoint as the image's user, every
// mount has a volume, probes and the scrape annotation name the ports the
// config listens on, Services select the pods, and every file the config
// names lies in something mounted into the pod. Exits 1 naming each fault.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments, parse } from "yaml";

const [dockerfile, dir] = process.argv.slice(2);
const faults = [];
const fault = (where, what) => faults.push(`${where}: ${what}`);

// The image: its entrypoint and its user (deploy/container/Dockerfile).
const docker = readFileSync(dockerfile, "utf8");
const finalStage = docker.slice(docker.lastIndexOf("\nFROM "));
const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(finalStage)?.[1] ?? "[]");
const imageUser = /^USER (\d+):(\d+)$/m.exec(finalStage);
if (!entrypoint.length) fault(dockerfile, "the final stage has no ENTRYPOINT [...]");
if (!imageUser) fault(dockerfile, "the final stage has no numeric USER uid:gid");

// The objects, in the files the kustomization lists.
const kustomization = parse(readFileSync(path.join(dir, "kustomization.yaml"), "utf8"));
const objects = [];
for (const file of kustomization.resources ?? []) {
  const where = path.join(dir, file);
  const text = readFileSync(where, "utf8");
  // Kubernetes reads YAML 1.1 (sigs.k8s.io/yaml): defaultMode 0440 is octal.
  for (const doc of parseAllDocuments(text, { version: "1.1" })) {
    const line = text.slice(0, doc.range[0]).split("\n").length;
    if (doc.errors.length) {
      for (const e of doc.errors) fault(`${where}:${line}`, e.message);
      continue;
    }
    const obj = doc.toJS();
    if (obj) objects.push({ obj, where: `${where}:${line} ${obj.kind}/${obj.metadata?.name}` });
  }
}
for (const { obj, where } of objects) {
  let Model;
  try {
    Model = (await import(`kubernetes-models/${obj.apiVersion}/${obj.kind}`))[obj.kind];
  } catch {
    fault(where, `no Kubernetes kind ${obj.apiVersion} ${obj.kind}`);
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    fault(where, `not a valid ${obj.kind}: ${e.message}`);
  }
}

const workloads = objects.filter(({ obj }) => ["Deployment", "StatefulSet"].includes(obj.kind));
if (workloads.length !== 1) fault(dir, `expected one Deployment or StatefulSet, found ${workloads.length}`);
const { obj: workload, where: ww } = workloads[0] ?? { obj: {}, where: dir };
const pod = workload.spec?.template ?? {};
const labels = pod.metadata?.labels ?? {};
const selects = (selector) => Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
if (!selects(workload.spec?.selector?.matchLabels)) fault(ww, "the selector does not match the pod's labels");

const containers = pod.spec?.containers ?? [];
if (containers.length !== 1) fault(ww, `expected one container, found ${containers.length}`);
const c = containers[0] ?? {};
const ports = Object.fromEntries((c.ports ?? []).map((p) => [p.name, p.containerPort]));
const portOf = (p) => (typeof p === "number" ? p : ports[p]);

// The image's entrypoint, as the image's non-root user, read-only.
if (c.command?.[0] !== entrypoint[0]) fault(ww, `command ${c.command?.[0]} is not the image's entrypoint ${entrypoint[0]}`);
const psc = pod.spec?.securityContext ?? {};
if (psc.runAsNonRoot !== true) fault(ww, "runAsNonRoot is not true");
if (imageUser && (String(psc.runAsUser) !== imageUser[1] || String(psc.runAsGroup) !== imageUser[2])) {
  fault(ww, `runs as ${psc.runAsUser}:${psc.runAsGroup}, the image's user is ${imageUser[1]}:${imageUser[2]}`);
}
const csc = c.securityContext ?? {};
if (csc.readOnlyRootFilesystem !== true) fault(ww, "the root file system is not read-only");
if (csc.allowPrivilegeEscalation !== false) fault(ww, "privilege escalation is not refused");
if (!(csc.capabilities?.drop ?? []).includes("ALL")) fault(ww, "capabilities are not all dropped");

// Probes and the scrape on the metrics port; Services on named ports.
const probe = (name, want) => {
  const p = c[name]?.httpGet;
  if (!p) return fault(ww, `no ${name}`);
  if (p.path !== want) fault(ww, `${name} asks ${p.path}, not ${want}`);
  if (portOf(p.port) !== ports.metrics) fault(ww, `${name} is not on the metrics port`);
};
probe("readinessProbe", "/readyz");
probe("livenessProbe", "/healthz");
const annotations = pod.metadata?.annotations ?? {};
if (annotations["prometheus.io/scrape"] !== "true") fault(ww, "no prometheus.io/scrape annotation");
if (Number(annotations["prometheus.io/port"]) !== ports.metrics) fault(ww, "prometheus.io/port is not the metrics port");
for (const { obj, where } of objects.filter(({ obj }) => obj.kind === "Service")) {
  if (!selects(obj.spec?.selector) || !Object.keys(obj.spec?.selector ?? {}).length) fault(where, "does not select the pods");
  for (const p of obj.spec?.ports ?? []) {
    if (portOf(p.targetPort) === undefined) fault(where, `targetPort ${p.targetPort} is no container port`);
  }
}

// Mounts and volumes, one for one.
const claims = (workload.spec?.volumeClaimTemplates ?? []).map((t) => t.metadata.name);
const volumes = Object.fromEntries((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
for (const name of claims) volumes[name] = { name, persistentVolumeClaim: {} };
const configMaps = Object.fromEntries(
  objects.filter(({ obj }) => obj.kind === "ConfigMap").map(({ obj }) => [obj.metadata.name, obj.data ?? {}]));
const mounts = [];
for (const m of c.volumeMounts ?? []) {
  const v = volumes[m.name];
  if (!v) {
    fault(ww, `mount ${m.mountPath} names no volume ${m.name}`);
    continue;
  }
  const mount = { mountPath: m.mountPath, readOnly: m.readOnly === true };
  if (v.configMap) Object.assign(mount, { type: "configMap", name: v.configMap.name, data: configMaps[v.configMap.name] ?? null });
  else if (v.secret) Object.assign(mount, { type: "secret", name: v.secret.secretName, items: v.secret.items ?? null, mode: v.secret.defaultMode ?? 0o644 });
  else if (v.emptyDir) Object.assign(mount, { type: "emptyDir" });
  else if (v.persistentVolumeClaim) Object.assign(mount, { type: "persistentVolume" });
  else fault(ww, `volume ${m.name} is of a kind this check does not know`);
  mounts.push(mount);
}
for (const name of Object.keys(volumes)) {
  if (!(c.volumeMounts ?? []).some((m) => m.name === name)) fault(ww, `volume ${name} is mounted nowhere`);
}
const inMount = (file, writable) =>
  mounts.some((m) => (file === m.mountPath || file.startsWith(`${m.mountPath}/`)) && (!writable || !m.readOnly));

// The config the container is given: its ports, and every file it names
// inside a mount (the data folder a writable one).
const configArg = (c.args ?? [])[(c.args ?? []).indexOf("--config") + 1];
const configMount = mounts.find((m) => m.type === "configMap" && configArg?.startsWith(`${m.mountPath}/`));
const configText = configMount?.data?.[path.basename(configArg ?? "")];
if (!configText) fault(ww, `--config ${configArg} is not a key of a ConfigMap mounted there`);
const config = configText ? parse(configText) : {};
const portIn = (listen) => Number(/:(\d+)$/.exec(listen ?? "")?.[1]);
if (portIn(config.listen) !== ports.grpc) fault(ww, `the config listens on ${config.listen}, the grpc port is ${ports.grpc}`);
if (portIn(config.metrics?.listen) !== ports.metrics) fault(ww, `metrics.listen ${config.metrics?.listen} is not the metrics port`);
if (!inMount(config.data_dir, true)) fault(ww, `data_dir ${config.data_dir} is not a writable mount`);
const files = [
  ["tls.cert", config.tls?.cert], ["tls.key", config.tls?.key], ["tls.ca", config.tls?.ca], ["tls.crl", config.tls?.crl],
  ["policy.agreements_dir", config.policy?.agreements_dir],
  ["audit.signing_key", config.audit?.signing_key], ["audit.subject_key", config.audit?.subject_key],
  ...(config.policy?.pseudonym_keys ?? []).map((k, i) => [`policy.pseudonym_keys[${i}].file`, k.file]),
  ["store.postgres.sslrootcert", config.store?.postgres?.sslrootcert],
];
for (const [key, file] of files) {
  if (file === undefined) continue;
  if (!path.isAbsolute(file)) fault(ww, `${key} ${file} is relative: give the pod's absolute path`);
  else if (!inMount(file, false)) fault(ww, `${key} ${file} is in no mount`);
}

const env = (c.env ?? []).map((e) => ({
  name: e.name,
  value: e.value ?? null,
  secret: e.valueFrom?.secretKeyRef?.name ?? null,
  key: e.valueFrom?.secretKeyRef?.key ?? null,
}));
if (faults.length) {
  for (const f of faults) console.error(`FAULT ${f}`);
  process.exit(1);
}
console.log(JSON.stringify({
  kind: workload.kind,
  replicas: workload.spec.replicas,
  command: [...c.command, ...(c.args ?? [])],
  user: psc.runAsUser,
  group: psc.runAsGroup,
  fsGroup: psc.fsGroup,
  env,
  mounts,
  ports,
  config,
}, null, 1));
