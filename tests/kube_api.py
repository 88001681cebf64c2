"""A Kubernetes API server on 127.0.0.1 that knows DaskClusters, for the real client to talk to.

This machine has no cluster, so the API server is the one boundary faked: requests arrive
over HTTP from the `kubernetes` client exactly as a cluster would get them, and every one is
recorded (method, path with query, JSON body) for the tests to compare with what they expect.
The Dask operator's part is played here too: after a cluster is created, reads of it see the
phases the operator sets, the scheduler Service appear, and its endpoint become ready.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

CLUSTERS = re.compile(
    r"^/apis/kubernetes\.dask\.org/v1/namespaces/([^/]+)/daskclusters(?:/([^/]+))?$"
)
SERVICE = re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)$")
SLICES = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$")


@dataclass
class Operator:
    """How the simulated operator and scheduler behave after a DaskCluster is created.

    `ready_after`: reads of the cluster before the scheduler's endpoint is ready (None: never);
    the Service exists from the first read on. `phase`: the phase the operator settles on.
    """

    ready_after: int | None = 1
    phase: str = "Running"
    reads: dict[str, int] = field(default_factory=dict)


class FakeKubeApi:
    def __init__(self, operator: Operator | None = None):
        self.operator = operator or Operator()
        self.requests: list[tuple[str, str, dict | None]] = []
        self.clusters: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _body(self) -> dict | None:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _handle(self) -> None:
                body = self._body()
                with api.lock:
                    api.requests.append((self.command, self.path, body))
                    status, payload = api.answer(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client(self):
        """A real kubernetes ApiClient pointed at this server."""
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig naming this server, for steps that run in their own process."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- what the API server (and the operator behind it) answers ----------------------

    @staticmethod
    def _status(code: int, reason: str) -> tuple[int, dict]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": reason,
            "code": code,
        }

    def answer(self, method: str, raw_path: str, body: dict | None) -> tuple[int, dict]:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query)
        if found := CLUSTERS.match(path):
            namespace, name = found.groups()
            if method == "POST" and name is None:
                key = (namespace, body["metadata"]["name"])
                if key in self.clusters:
                    return self._status(409, "AlreadyExists")
                self.clusters[key] = json.loads(json.dumps(body))
                return 201, body
            if name is None:
                return self._status(405, "MethodNotAllowed")
            key = (namespace, name)
            if key not in self.clusters:
                return self._status(404, "NotFound")
            if method == "GET":
                self.operator.reads[name] = self.operator.reads.get(name, 0) + 1
                cluster = self.clusters[key]
                cluster["status"] = {"phase": self.operator.phase}
                return 200, cluster
            if method == "DELETE":
                del self.clusters[key]
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if found := SERVICE.match(path):
            namespace, service = found.groups()
            name = service.removesuffix("-scheduler")
            if method == "GET" and (namespace, name) in self.clusters and service != name:
                return 200, {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": service, "namespace": namespace},
                }
            return self._status(404, "NotFound")
        if (found := SLICES.match(path)) and method == "GET":
            namespace = found.group(1)
            (selector,) = query["labelSelector"]
            service = selector.removeprefix("kubernetes.io/service-name=")
            name = service.removesuffix("-scheduler")
            ready_after = self.operator.ready_after
            reads = self.operator.reads.get(name, 0)
            ready = (namespace, name) in self.clusters and ready_after is not None
            ready = ready and reads >= ready_after
            endpoint = {"addresses": ["10.244.0.7"], "conditions": {"ready": ready}}
            items = [
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {"name": f"{service}-x1", "namespace": namespace},
                    "addressType": "IPv4",
                    "endpoints": [endpoint],
                }
            ]
            return 200, {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {},
                "items": items,
            }
        return self._status(404, "NotFound")
