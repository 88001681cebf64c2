"""The merge patch that makes KServe's `inferenceservice-config` work on Knative + Kourier.

KServe's default ingress settings assume Istio: the controller creates a top-level Istio
VirtualService per InferenceService and reports that host as the service URL, which
Kourier never routes. KServe's guide for Kourier ("Deploy InferenceService with Alternative
Networking Layer", kserve.github.io/website/docs/admin-guide/serverless/kourier-networking,
version 0.16; kserve/kserve#2380 added the flag) says: set `"disableIstioVirtualHost": true`
in the `ingress` key, then restart the controller. The URL is then the predictor's own
Knative route, which Kourier serves. Canary traffic splitting needs Serverless (Knative)
mode, so `deploy.defaultDeploymentMode` is set to it explicitly too: "Knative", the name
KServe 0.16 gives it (kserve#4608 renamed "Serverless", which it still reads as an alias, and
made Standard the default); kfp_lifecycle/deploy.py annotates each InferenceService alike.

Each key holds a JSON document as a string; only the two fields change, every other field
keeps its value (as KServe's own hack/setup/quick-install scripts' update_isvc_config does).

    kubectl -n kserve get configmap inferenceservice-config -o json \
      | python3 cluster/kserve_config.py     # prints the patch for kubectl patch --type merge
"""

from __future__ import annotations

import json
import sys
from typing import Any

SETTINGS = {
    "ingress": {"disableIstioVirtualHost": True},
    "deploy": {"defaultDeploymentMode": "Knative"},
}


def kourier_patch(config_map: dict[str, Any]) -> dict[str, Any]:
    """The `{"data": {...}}` merge patch that applies SETTINGS to a rendered ConfigMap.

    Raises ValueError naming the key when the ConfigMap lacks it or it is not a JSON object,
    so a KServe release that moved these settings fails loudly instead of being half-patched.
    """
    data = config_map.get("data") or {}
    patch: dict[str, str] = {}
    for key, fields in SETTINGS.items():
        if key not in data:
            raise ValueError(f"inferenceservice-config has no data.{key}: is this KServe's?")
        try:
            current = json.loads(data[key])
        except json.JSONDecodeError as error:
            raise ValueError(f"inferenceservice-config data.{key} is not JSON: {error}") from None
        if not isinstance(current, dict):
            raise ValueError(f"inferenceservice-config data.{key} is not a JSON object")
        patch[key] = json.dumps({**current, **fields}, indent=2)
    return {"data": patch}


def main() -> int:
    try:
        print(json.dumps(kourier_patch(json.load(sys.stdin))))
    except (ValueError, json.JSONDecodeError) as error:
        print(f"kserve_config.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
