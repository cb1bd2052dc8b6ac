// Validates custom resources against the CRD schemas shipped by @kubernetes-models (run by test_validators.py).
// stdin: a JSON array of Kubernetes objects. stdout: one JSON line per object: {kind, name, error}.
// Objects of an API group without a package here are reported with an error, never passed silently.
const PACKAGES = { "keda.sh": "@kubernetes-models/keda", "monitoring.coreos.com": "@kubernetes-models/prometheus-operator" };

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
let failed = false;
for (const object of JSON.parse(Buffer.concat(chunks).toString("utf8"))) {
  const [group, version] = object.apiVersion.split("/");
  const name = object.metadata?.name;
  let error = null;
  try {
    if (!(group in PACKAGES)) throw new Error(`no schema package for API group ${group}`);
    const module = await import(`${PACKAGES[group]}/${group}/${version}/${object.kind}`);
    new module[object.kind](object).validate();
  } catch (exc) {
    error = String(exc.message ?? exc);
    failed = true;
  }
  console.log(JSON.stringify({ kind: object.kind, name, error }));
}
process.exitCode = failed ? 1 : 0;
