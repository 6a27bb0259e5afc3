// Validates custom resources (prometheus-operator and KEDA kinds) against their CRD schemas.
//
//   node deploy/tools/validate-crds.mjs FILE.yaml [...]     (or "-" for stdin)
//
// Prints one JSON line per document: {"file", "index", "kind", "name", "ok", "error"?}; exits 1 if any document
// fails or has a kind this script does not know. The packages come from deploy/install-tools.sh (.tools/node);
// TENSORGATE_NODE_MODULES points elsewhere.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const modulesDir = process.env.TENSORGATE_NODE_MODULES ?? path.resolve(here, "../../.tools/node/node_modules");

async function load(spec) {
  try {
    return await import(pathToFileURL(path.join(modulesDir, spec)).href);
  } catch (err) {
    console.error(`validate-crds: cannot load ${spec} from ${modulesDir} (run deploy/install-tools.sh): ${err.message}`);
    process.exit(2);
  }
}

const yaml = await load("js-yaml/dist/js-yaml.mjs");
const monitoring = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const keda = "@kubernetes-models/keda/keda.sh/v1alpha1";
const kinds = {
  "monitoring.coreos.com/v1/ServiceMonitor": [`${monitoring}/ServiceMonitor.js`, "ServiceMonitor"],
  "monitoring.coreos.com/v1/PodMonitor": [`${monitoring}/PodMonitor.js`, "PodMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": [`${monitoring}/PrometheusRule.js`, "PrometheusRule"],
  "keda.sh/v1alpha1/ScaledObject": [`${keda}/ScaledObject.js`, "ScaledObject"],
  "keda.sh/v1alpha1/TriggerAuthentication": [`${keda}/TriggerAuthentication.js`, "TriggerAuthentication"],
};

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: validate-crds.mjs FILE.yaml [...] (- for stdin)");
  process.exit(2);
}

let failed = 0;
for (const file of files) {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  const docs = yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
  for (const [index, doc] of docs.entries()) {
    const key = `${doc.apiVersion}/${doc.kind}`;
    const result = { file, index, kind: key, name: doc.metadata?.name ?? null, ok: true };
    const target = kinds[key];
    if (!target) {
      result.ok = false;
      result.error = `no schema for ${key}; known: ${Object.keys(kinds).join(", ")}`;
    } else {
      const mod = await load(target[0]);
      try {
        new mod[target[1]](doc).validate();
      } catch (err) {
        result.ok = false;
        result.error = err.message;
      }
    }
    if (!result.ok) failed += 1;
    console.log(JSON.stringify(result));
  }
}
process.exit(failed ? 1 : 0);
