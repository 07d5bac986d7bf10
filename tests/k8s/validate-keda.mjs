// Validates the KEDA objects (apiVersion keda.sh/...) in the YAML files
// named on the command line against KEDA's schemas, through
// @kubernetes-models/keda's generated validators; scripts/check-k8s runs it
// (kubernetes-validate knows only Kubernetes's built-in kinds). Every
// document of another group is left to kubernetes-validate. Fails on a
// KEDA kind it has no model for, on a file without any document, and on
// the first schema violation of each object (all objects are reported).
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: validate-keda.mjs FILE.yaml...");
  process.exit(2);
}
let failed = 0;
let checked = 0;
for (const file of files) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.error(`${file}: not YAML: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || !String(obj.apiVersion ?? "").startsWith("keda.sh/")) continue;
    const where = `${file}: ${obj.kind}/${obj.metadata?.name}`;
    const Model = obj.apiVersion === "keda.sh/v1alpha1" ? keda[obj.kind] : undefined;
    if (typeof Model !== "function" || typeof Model.prototype.validate !== "function") {
      console.error(`${where}: no KEDA model for ${obj.apiVersion} ${obj.kind}`);
      failed++;
      continue;
    }
    try {
      new Model(obj).validate();
      console.log(`${where} passed against KEDA's schema`);
      checked++;
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      failed++;
    }
  }
}
if (failed > 0) process.exit(1);
if (checked === 0) {
  console.error("validate-keda: no KEDA object in " + files.join(" "));
  process.exit(1);
}
