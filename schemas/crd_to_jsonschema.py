"""Write the JSON schema of a CustomResourceDefinition's version, as kubeconform reads them.

The same conversion datree's catalog applies to the other schemas here: the version's
openAPIV3Schema, with `additionalProperties: false` on every object below the root that lists
its properties (what the API server's pruning and strict decoding enforce; an object marked
`x-kubernetes-preserve-unknown-fields` keeps unknown fields) and Kubernetes'
`x-kubernetes-int-or-string` spelled as JSON schema.

    python schemas/crd_to_jsonschema.py manifests/dask-operator/crds/daskcluster.yaml v1 \
        > schemas/crds/kubernetes.dask.org/daskcluster_v1.json

tests/test_dask_manifests.py checks the committed file equals what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strict(node: Any, root: bool = False) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    keeps_unknown = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not root and not keeps_unknown:
        out["additionalProperties"] = False
    return out


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The JSON schema of `version` of the CRD (one document of a CRD YAML file)."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not a CustomResourceDefinition: kind {crd.get('kind')!r}")
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return _strict(served["schema"]["openAPIV3Schema"], root=True)
    names = [served["name"] for served in crd["spec"]["versions"]]
    raise ValueError(f"{crd['metadata']['name']} has no version {version!r} (has {names})")


def render(path: Path, version: str) -> str:
    (crd,) = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return json.dumps(crd_schema(crd, version), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: crd_to_jsonschema.py CRD.yaml VERSION")
    sys.stdout.write(render(Path(sys.argv[1]), sys.argv[2]))
