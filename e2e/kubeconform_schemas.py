#!/usr/bin/env python3
"""Writes JSON schemas for kubeconform from a live API server's OpenAPI v3 and from CRD files.

    kubeconform_schemas.py --kubectl KUBECTL --kubeconfig FILE --crds DIR --out DIR

Schemas are named <group>-<version>-<kind>.json (lowercase kind, empty group for the core API):
use them with  kubeconform -schema-location 'DIR/{{ .Group }}-{{ .ResourceAPIVersion }}-{{ .ResourceKind }}.json'.
Every object schema that lists its properties is closed (additionalProperties: false) unless the
API preserves unknown fields there, so kubeconform -strict rejects misspelled fields.
"""
import argparse
import json
import os
import subprocess



def close(node):
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for v in node.values():
            close(v)
    elif isinstance(node, list):
        for v in node:
            close(v)


def write(out, group, version, kind, schema):
    # kubeconform's {{ .Group }} is the part of apiVersion before the slash: "v1" for the core group.
    name = f"{group or version}-{version}-{kind.lower()}.json"
    with open(os.path.join(out, name), "w") as f:
        json.dump(schema, f)


def from_api(kubectl, kubeconfig, out):
    def raw(path):
        return json.loads(subprocess.check_output([kubectl, "--kubeconfig", kubeconfig, "get", "--raw", path]))

    for gv, ref in raw("/openapi/v3")["paths"].items():
        if not (gv == "api/v1" or gv.startswith("apis/")):
            continue
        doc = raw(ref["serverRelativeURL"])
        schemas = doc.get("components", {}).get("schemas", {})
        close(schemas)
        for schema in schemas.values():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                standalone = dict(schema)
                standalone["components"] = {"schemas": schemas}
                write(out, gvk["group"], gvk["version"], gvk["kind"], standalone)


def from_crds(kubectl, kubeconfig, crd_dir, out):
    # kubectl reads the YAML, so no YAML library is needed here.
    text = subprocess.check_output(
        [kubectl, "--kubeconfig", kubeconfig, "create", "--dry-run=client", "-o", "json", "-f", crd_dir]).decode()
    # One JSON document per object, one after the other.
    items, decoder, at = [], json.JSONDecoder(), 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        obj, at = decoder.raw_decode(text, at)
        items.extend(obj.get("items", [obj]))
    for crd in items:
        spec = crd["spec"]
        for v in spec["versions"]:
            schema = v["schema"]["openAPIV3Schema"]
            # The API server adds these to every custom resource.
            props = schema.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
            close(schema)
            write(out, spec["group"], v["name"], spec["names"]["kind"], schema)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kubectl", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--crds", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    from_api(a.kubectl, a.kubeconfig, a.out)
    from_crds(a.kubectl, a.kubeconfig, a.crds, a.out)


if __name__ == "__main__":
    main()
