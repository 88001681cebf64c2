"""Where a run's Dask cluster comes from on Kubernetes: the Dask Kubernetes Operator.

A pipeline run that asks for an ephemeral cluster gets a `DaskCluster` of its own (named
after the run id, labelled with it), waits until its scheduler answers, hands the scheduler
address to the Dask engine, and deletes it at the end; the pipeline deletes it in an exit
handler, so a failed run leaves nothing behind. A run can instead be given the address of a
scheduler someone else runs, or none (each step then starts a LocalCluster in its own pod).

The operator (manifests/dask-operator) turns a DaskCluster into a scheduler Deployment and
Service `<name>-scheduler` and a worker group; this module writes only DaskClusters and
reads the scheduler's Service and EndpointSlices. Every call is in `API_RULES`, which
manifests/base/dask/rbac.yaml grants to KFP's pipeline-runner, and nothing more.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from kfp_lifecycle.cluster import S3_CONFIG_MAP, S3_SECRET
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.image import IMAGE

log = logging.getLogger(__name__)

GROUP = "kubernetes.dask.org"
VERSION = "v1"
PLURAL = "daskclusters"
API_VERSION = f"{GROUP}/{VERSION}"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
# The operator names the scheduler's Service "<cluster>-scheduler" and refuses a cluster name
# that would make it longer than a Kubernetes name (63): dask_kubernetes.constants.
SCHEDULER_SUFFIX = "-scheduler"
MAX_NAME_LENGTH = 63 - len(SCHEDULER_SUFFIX)
NAME_PREFIX = "lifecycle-dask-"
RUN_LABEL = "kfp-lifecycle.io/run-id"
EPHEMERAL = "ephemeral"
SCRATCH = "/tmp"  # the only writable path: spill files, dask's temporary directory

# Every call DaskClusterApi makes: (API group, resource, verbs). manifests/base/dask/rbac.yaml
# grants exactly these (a test compares them).
API_RULES = (
    (GROUP, PLURAL, ("get", "create", "delete")),
    ("", "services", ("get",)),
    ("discovery.k8s.io", "endpointslices", ("list",)),
)


@dataclass(frozen=True)
class Choice:
    """What the pipeline parameter `dask_cluster` asks for."""

    mode: str  # "local" | "ephemeral" | "address"
    address: str = ""


def parse_choice(value: str) -> Choice:
    """ "" -> a LocalCluster per step; "ephemeral" -> a DaskCluster for the run; else an address."""
    value = value.strip()
    if not value:
        return Choice("local")
    if value == EPHEMERAL:
        return Choice(EPHEMERAL)
    if re.fullmatch(r"(tcp|tls)://[A-Za-z0-9.-]+:\d{1,5}", value):
        return Choice("address", value)
    raise LifecycleError(
        f"dask_cluster {value!r} is neither empty (a local cluster), {EPHEMERAL!r} (a "
        f"DaskCluster for the run) nor a scheduler address like tcp://host:{SCHEDULER_PORT}"
    )


def cluster_name(run_id: str) -> str:
    """The run's DaskCluster name: the same for the step that creates it and the one that deletes.

    A valid name for the operator (lowercase RFC 1123 label, at most MAX_NAME_LENGTH) that
    also makes `<name>-scheduler` a valid Service name (it must start with a letter).
    """
    if not run_id.strip():
        raise LifecycleError("a run id is needed to name the run's DaskCluster")
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    name = f"{NAME_PREFIX}{slug}".rstrip("-")
    if len(name) > MAX_NAME_LENGTH or not slug:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
        name = f"{name[: MAX_NAME_LENGTH - 13].rstrip('-')}-{digest}"
    return name


def scheduler_service(name: str) -> str:
    return f"{name}{SCHEDULER_SUFFIX}"


def scheduler_address(name: str, namespace: str) -> str:
    """Where a pod in any namespace reaches the cluster's scheduler (its Service's DNS name)."""
    return f"tcp://{scheduler_service(name)}.{namespace}.svc:{SCHEDULER_PORT}"


@dataclass
class ClusterSpec:
    """One run's Dask cluster: the project's image, N workers of a given size."""

    name: str
    namespace: str = "kfp-lifecycle"
    run_id: str = ""
    image: str = IMAGE
    workers: int = 2
    worker_memory: str = "4Gi"
    worker_cpu: str = "1"
    scheduler_memory: str = "1Gi"
    scheduler_cpu: str = "500m"
    # Seconds the operator waits with an idle scheduler before it deletes the cluster
    # (0: never). A safety net for runs that are stopped before their exit handler runs.
    idle_timeout: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def _check(spec: ClusterSpec) -> None:
    if not 1 <= spec.workers <= 1000:
        raise LifecycleError(f"dask workers must be 1..1000, got {spec.workers}")
    quantity = r"\d+(\.\d+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?"
    for what, value in (
        ("worker memory", spec.worker_memory),
        ("worker cpu", spec.worker_cpu),
        ("scheduler memory", spec.scheduler_memory),
        ("scheduler cpu", spec.scheduler_cpu),
    ):
        if not re.fullmatch(quantity, str(value)):
            raise LifecycleError(
                f"dask {what} {value!r} is not a Kubernetes quantity (e.g. 4Gi, 500m)"
            )
    if spec.idle_timeout < 0:
        raise LifecycleError(f"dask idle timeout must be >= 0 seconds, got {spec.idle_timeout}")


def _container(name: str, spec: ClusterSpec, args: list[str], cpu: str, memory: str) -> dict:
    """A hardened container of the project's image, with the run's S3 settings."""
    return {
        "name": name,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["dask", name],
        "args": args,
        # Pipelines read s3:// data; workers do the reading, so they get the same settings.
        "envFrom": [
            {"secretRef": {"name": S3_SECRET}},
            {"configMapRef": {"name": S3_CONFIG_MAP, "optional": True}},
        ],
        "env": [{"name": "DASK_TEMPORARY_DIRECTORY", "value": SCRATCH}],
        # requests == limits: a worker's memory limit is what it plans its spilling around
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
    }


def _pod(container: dict) -> dict:
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }


def _service_port(name: str, port: int) -> dict:
    return {"name": name, "protocol": "TCP", "port": port, "targetPort": name}


def build_dask_cluster(spec: ClusterSpec) -> dict[str, Any]:
    """The DaskCluster body: scheduler and workers in the project's image (one image, one truth).

    Shaped as the operator's own `make_cluster_spec` makes them (ports named tcp-comm and
    http-dashboard, the scheduler ready when its /health answers), and hardened like every
    pod the project runs.
    """
    _check(spec)
    labels = {
        "app.kubernetes.io/part-of": "kfp-lifecycle",
        "app.kubernetes.io/component": "dask",
        **({RUN_LABEL: spec.run_id} if spec.run_id else {}),
        **spec.labels,
    }
    scheduler = _container(
        "scheduler",
        spec,
        ["--host", "0.0.0.0", "--port", str(SCHEDULER_PORT),
         "--dashboard-address", f":{DASHBOARD_PORT}"],
        spec.scheduler_cpu,
        spec.scheduler_memory,
    )  # fmt: skip
    scheduler["ports"] = [
        {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
        {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
    ]
    health = {"httpGet": {"port": "http-dashboard", "path": "/health"}}
    scheduler["readinessProbe"] = {**health, "initialDelaySeconds": 0, "periodSeconds": 2}
    scheduler["livenessProbe"] = {**health, "initialDelaySeconds": 15, "periodSeconds": 20}
    # The operator sets DASK_WORKER_NAME and DASK_SCHEDULER_ADDRESS in each worker pod.
    worker = _container(
        "worker",
        spec,
        ["--name", "$(DASK_WORKER_NAME)", "--local-directory", SCRATCH,
         "--dashboard-address", f":{WORKER_DASHBOARD_PORT}"],
        spec.worker_cpu,
        spec.worker_memory,
    )  # fmt: skip
    worker["ports"] = [
        {"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "DaskCluster",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "idleTimeout": spec.idle_timeout,
            "worker": {"replicas": spec.workers, "spec": _pod(worker)},
            "scheduler": {
                "spec": _pod(scheduler),
                "service": {
                    "type": "ClusterIP",
                    "selector": {
                        "dask.org/cluster-name": spec.name,
                        "dask.org/component": "scheduler",
                    },
                    "ports": [
                        _service_port("tcp-comm", SCHEDULER_PORT),
                        _service_port("http-dashboard", DASHBOARD_PORT),
                    ],
                },
            },
        },
    }


class DaskClusterApi:
    """The Kubernetes API boundary: DaskClusters, and reads of the scheduler's Service."""

    def __init__(self, api_client: Any | None = None):
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)

    @staticmethod
    def _failed(what: str, error: Any) -> LifecycleError:
        return LifecycleError(f"{what} failed: {error.status} {error.reason}")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            return self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body
            )
        except ApiException as error:
            raise self._failed(f"creating DaskCluster {namespace}/{name}", error) from None

    def get(self, name: str, namespace: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise self._failed(f"reading DaskCluster {namespace}/{name}", error) from None

    def delete(self, name: str, namespace: str) -> bool:
        """Delete it (its pods and Service go with it); False when it was not there."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise self._failed(f"deleting DaskCluster {namespace}/{name}", error) from None

    def service_exists(self, name: str, namespace: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespaced_service(name, namespace)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise self._failed(f"reading Service {namespace}/{name}", error) from None

    def ready_endpoints(self, service: str, namespace: str) -> int:
        """How many of the Service's endpoints are ready (the scheduler passed its probe)."""
        from kubernetes.client.exceptions import ApiException

        try:
            slices = self.discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"kubernetes.io/service-name={service}"
            )
        except ApiException as error:
            raise self._failed(f"listing endpoints of {namespace}/{service}", error) from None
        return sum(
            1
            for piece in slices.items
            for endpoint in piece.endpoints or []
            if endpoint.conditions is None or endpoint.conditions.ready is not False
        )


def wait_for_scheduler(
    api: DaskClusterApi,
    name: str,
    namespace: str,
    timeout_seconds: float,
    poll_seconds: float = 2.0,
    clock: Any = time,
) -> str:
    """Wait until the scheduler's Service has a ready endpoint; returns the scheduler address.

    The operator reports `Running` as soon as the Service exists; only a ready endpoint
    means the scheduler itself answers (its readiness probe passed).
    """
    deadline = clock.monotonic() + timeout_seconds
    service = scheduler_service(name)
    phase = "not created"
    while True:
        cluster = api.get(name, namespace)
        if cluster is None:
            raise LifecycleError(f"DaskCluster {namespace}/{name} disappeared while starting")
        phase = cluster.get("status", {}).get("phase") or "no status yet"
        if phase == "Error":
            raise LifecycleError(
                f"the Dask operator rejected DaskCluster {namespace}/{name} (phase Error): "
                f"`kubectl -n {namespace} describe daskcluster {name}` says why"
            )
        if api.service_exists(service, namespace) and api.ready_endpoints(service, namespace):
            return scheduler_address(name, namespace)
        if clock.monotonic() >= deadline:
            hint = (
                "is the Dask operator installed and running? (kubectl -n dask-operator get pods)"
                if phase == "no status yet"
                else f"kubectl -n {namespace} get pods -l dask.org/cluster-name={name}"
            )
            raise LifecycleError(
                f"the scheduler of DaskCluster {namespace}/{name} was not ready after "
                f"{timeout_seconds:.0f}s (phase: {phase}): {hint}"
            )
        clock.sleep(poll_seconds)


def start_cluster(
    api: DaskClusterApi,
    spec: ClusterSpec,
    timeout_seconds: float = 600,
    poll_seconds: float = 2.0,
    clock: Any = time,
) -> str:
    """Create the DaskCluster and wait for its scheduler; returns the scheduler address.

    If the scheduler does not come up, the cluster is deleted before the error is raised:
    nothing is left running for a step that failed.
    """
    body = build_dask_cluster(spec)
    log.info(
        "creating DaskCluster %s/%s: %d workers x (%s cpu, %s memory), image %s",
        spec.namespace, spec.name, spec.workers, spec.worker_cpu, spec.worker_memory, spec.image,
    )  # fmt: skip
    api.create(body)
    try:
        address = wait_for_scheduler(
            api, spec.name, spec.namespace, timeout_seconds, poll_seconds, clock
        )
    except LifecycleError as error:
        api.delete(spec.name, spec.namespace)
        raise LifecycleError(f"{error}; DaskCluster {spec.namespace}/{spec.name} deleted") from None
    log.info("Dask scheduler ready at %s", address)
    return address


def stop_cluster(api: DaskClusterApi, name: str, namespace: str) -> bool:
    """Delete the run's DaskCluster; False (and no error) when there was none to delete."""
    deleted = api.delete(name, namespace)
    if deleted:
        log.info("deleted DaskCluster %s/%s", namespace, name)
    else:
        log.info("no DaskCluster %s/%s to delete", namespace, name)
    return deleted
