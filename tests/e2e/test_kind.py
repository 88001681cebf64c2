"""End to end on a real cluster (kind or cloud): what `make e2e` and the e2e-kind workflow run.

Needs the stack of `make kind-up` (KFP, KServe with Knative and Kourier, MinIO, the
project's manifests, Prometheus, the Dask Kubernetes Operator) and the image loaded
(`make images kind-load`). Skips, saying why, when no cluster is reachable, unless
LIFECYCLE_E2E_REQUIRED=1 (set by the e2e-kind workflow): then an unreachable cluster is a
failure, so a run that tested nothing cannot pass.
Environment: KFP_HOST (default http://localhost:8080), S3_ENDPOINT (default
http://localhost:9000) and the MinIO credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
(default: read from manifests/overlays/kind/minio.env), INGRESS (default
http://localhost:8081), PROMETHEUS (default http://localhost:9090).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
KFP_HOST = os.environ.get("KFP_HOST", "http://localhost:8080")
INGRESS = os.environ.get("INGRESS", "http://localhost:8081")
PROMETHEUS = os.environ.get("PROMETHEUS", "http://localhost:9090")
REQUIRED = os.environ.get("LIFECYCLE_E2E_REQUIRED", "").strip().lower() in {"1", "true", "yes"}
NAMESPACE = "kfp-lifecycle"
SERVICE = "churn"


def _cluster_reason() -> str | None:
    """Why the suite cannot run here, or None when a cluster and KFP answer."""
    try:
        from kubernetes import client, config

        config.load_kube_config()
        client.VersionApi().get_code(_request_timeout=5)
    except Exception as error:
        return f"no Kubernetes cluster reachable ({type(error).__name__}): run `make kind-up`"
    try:
        httpx.get(f"{KFP_HOST}/apis/v2beta1/healthz", timeout=5).raise_for_status()
    except httpx.HTTPError as error:
        return f"Kubeflow Pipelines not reachable at {KFP_HOST} ({error})"
    return None


REASON = _cluster_reason()
if REASON and REQUIRED:
    pytest.fail(f"LIFECYCLE_E2E_REQUIRED is set, but {REASON}", pytrace=False)
if REASON:
    pytest.skip(REASON, allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def s3_environment():
    env_file = ROOT / "manifests" / "overlays" / "kind" / "minio.env"
    if "AWS_ACCESS_KEY_ID" not in os.environ and env_file.exists():
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() and not name.startswith("#"):
                os.environ.setdefault(name.strip(), value.strip())
    os.environ.setdefault("S3_ENDPOINT", "http://localhost:9000")


def lifecycle(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kfp_lifecycle.cli", *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def predict(rows: list[dict]) -> dict:
    from kfp_lifecycle.deploy import KServeApi

    service = KServeApi().get(SERVICE, NAMESPACE)
    host = service["status"]["url"].split("://", 1)[1]
    response = httpx.post(
        f"{INGRESS}/v1/models/{SERVICE}:predict",
        json={"instances": rows},
        headers={"Host": host},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def test_train_deploy_and_canary_through_the_ingress(tmp_path):
    from kfp_lifecycle.demo import DEMO_GATE, make_churn_dataset
    from kfp_lifecycle.storage import s3_client, upload_file

    table = make_churn_dataset()
    table.to_csv(tmp_path / "churn.csv", index=False)
    upload_file(s3_client(), tmp_path / "churn.csv", "data", "churn.csv")
    training = [
        "--param", "data=s3://data/churn.csv", "--param", "target=churned",
        "--param", "registry=s3://models/registry", "--param", "model_name=churn",
        "--param", f"gate_options={json.dumps(DEMO_GATE)}",
    ]  # fmt: skip
    lifecycle("submit", "training", "--host", KFP_HOST, "--wait", *training)
    deployment = [
        "--param", "registry=s3://models/registry", "--param", "model_name=churn",
        "--param", f"service_name={SERVICE}", "--param", f"namespace={NAMESPACE}",
    ]  # fmt: skip
    lifecycle("submit", "deployment", "--host", KFP_HOST, "--wait", *deployment)

    rows = json.loads(table.drop(columns=["churned"]).head(3).to_json(orient="records"))
    first = predict(rows)
    assert len(first["predictions"]) == 3 and set(first["predictions"]) <= {"yes", "no"}

    # a second champion, then a canary stepped by hand and promoted
    lifecycle("submit", "training", "--host", KFP_HOST, "--wait", *training)
    lifecycle(
        "deploy", "--model", "s3://models/registry/churn@champion", "--name", SERVICE,
        "--namespace", NAMESPACE, "--canary", "20",
    )  # fmt: skip
    from kfp_lifecycle.deploy import KServeApi, wait_until_ready

    wait_until_ready(KServeApi(), SERVICE, NAMESPACE, timeout_seconds=600)
    lifecycle("rollout", "set-traffic", "50", "--name", SERVICE, "--namespace", NAMESPACE)
    versions = {predict(rows)["model_version"] for _ in range(30)}
    assert len(versions) == 2, f"both revisions should answer at 50%, saw {versions}"
    assert_prometheus_sees(versions, rows)
    lifecycle("rollout", "promote", "--name", SERVICE, "--namespace", NAMESPACE)
    time.sleep(10)
    assert len({predict(rows)["model_version"] for _ in range(10)}) == 1


def assert_prometheus_sees(versions: set[str], rows: list[dict]) -> None:
    """The canary analysis' data on kind: both revisions' requests, counted in Prometheus.

    Traffic goes on while polling: `increase()` needs the counters to move between scrapes.
    """
    from kfp_lifecycle.canary import revision_stats

    deadline = time.monotonic() + 120  # several 15 s scrapes
    while True:
        for _ in range(10):
            predict(rows)
        stats = [revision_stats(PROMETHEUS, SERVICE, version, "5m") for version in versions]
        if all(s.requests > 0 for s in stats) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert all(s.requests > 0 for s in stats), f"Prometheus at {PROMETHEUS} counted {stats}"


# --- a run on an ephemeral Dask cluster (the Dask Kubernetes Operator) --------------------


def _dask_clusters(run_id: str) -> list[dict]:
    from kubernetes import client

    from kfp_lifecycle.dask_cluster import GROUP, PLURAL, RUN_LABEL, VERSION

    found = client.CustomObjectsApi().list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, label_selector=f"{RUN_LABEL}={run_id}"
    )
    return found["items"]


def _run_on_dask(tmp_path, data: str) -> tuple[str, str, list[dict]]:
    """Submit training-dask; returns the run id, its final state and the cluster seen running."""
    from kfp_lifecycle import submit
    from kfp_lifecycle.demo import DEMO_GATE

    pytest.importorskip(
        "distributed", reason="no Dask in this environment, so none in the image built from it"
    )
    kfp_client = submit.client(KFP_HOST, None)
    params = {
        "data": data, "target": "churned", "registry": "s3://models/registry",
        "model_name": "churn-dask", "gate_options": DEMO_GATE,
        "dask_cluster": "ephemeral", "dask_workers": 2, "dask_worker_memory": "1Gi",
        "dask_worker_cpu": "500m",
    }  # fmt: skip
    run_id = submit.submit(
        kfp_client, KFP_HOST, "training-dask", params, "kfp-lifecycle", None, False
    )["run_id"]
    seen: list[dict] = []
    deadline = time.monotonic() + 600
    while not seen and time.monotonic() < deadline:
        seen = _dask_clusters(run_id)
        time.sleep(2)
    run = kfp_client.wait_for_run_completion(run_id, timeout=3 * 60 * 60)
    return run_id, str(run.state), seen


def _assert_deleted(run_id: str) -> None:
    deadline = time.monotonic() + 120  # the operator's finalizer lets the object go
    while _dask_clusters(run_id) and time.monotonic() < deadline:
        time.sleep(2)
    assert not _dask_clusters(run_id), f"run {run_id} left its DaskCluster behind"


def test_training_on_an_ephemeral_dask_cluster_deletes_it_at_the_end(tmp_path):
    from kfp_lifecycle.dask_cluster import cluster_name
    from kfp_lifecycle.demo import make_churn_dataset
    from kfp_lifecycle.storage import s3_client, upload_file

    make_churn_dataset().to_csv(tmp_path / "churn.csv", index=False)
    upload_file(s3_client(), tmp_path / "churn.csv", "data", "churn.csv")
    run_id, state, seen = _run_on_dask(tmp_path, "s3://data/churn.csv")
    assert state == "SUCCEEDED", f"run {run_id} ended {state}"
    (cluster,) = seen
    assert cluster["metadata"]["name"] == cluster_name(run_id)
    assert cluster["spec"]["worker"]["replicas"] == 2
    _assert_deleted(run_id)


def test_a_failed_dask_run_deletes_its_cluster_too(tmp_path):
    run_id, state, seen = _run_on_dask(tmp_path, "s3://data/no-such-table.csv")
    assert state == "FAILED", f"run {run_id} ended {state}"
    assert seen, "the cluster was never created: the failure came before the exit handler's body"
    _assert_deleted(run_id)


# --- scale to zero (Knative): the cold-start cost the README's rollout section cites ------


def _pods_of(service: str) -> list:
    from kubernetes import client

    selector = f"serving.kserve.io/inferenceservice={service}"
    pods = client.CoreV1Api().list_namespaced_pod(NAMESPACE, label_selector=selector).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def test_scale_to_zero_cold_start_is_measured(capsys):
    """A Knative service with --min-replicas 0 scales to no pod when idle; the first request
    then waits for a pod to start and the model to load. Prints the measured cold start."""
    from kfp_lifecycle.deploy import KServeApi, wait_until_ready
    from kfp_lifecycle.registry import resolve_reference

    champion = "s3://models/registry/churn@champion"
    try:
        resolve_reference(champion)
    except Exception as error:  # the training test registers it
        pytest.skip(f"no registered champion to deploy ({error})")
    name = f"{SERVICE}-zero"
    lifecycle(
        "deploy", "--model", champion, "--name", name, "--namespace", NAMESPACE,
        "--mode", "knative", "--min-replicas", "0",
    )  # fmt: skip
    api = KServeApi()
    try:
        wait_until_ready(api, name, NAMESPACE, timeout_seconds=600)
        deadline = time.monotonic() + 600  # Knative's stable window, then scale-down
        while _pods_of(name) and time.monotonic() < deadline:
            time.sleep(5)
        assert not _pods_of(name), f"{name} kept its pods: scale to zero did not happen"
        host = api.get(name, NAMESPACE)["status"]["url"].split("://", 1)[1]
        row = {"signup_date": "2025-03-01 10:00:00", "age": 41, "tenure_months": 3,
               "monthly_charges": 31.5, "support_calls": 4, "plan": "basic",
               "contract": "month-to-month", "region": "north",
               "payment_method": "electronic-check"}  # fmt: skip
        started = time.monotonic()
        response = httpx.post(
            f"{INGRESS}/v1/models/{name}:predict", json={"instances": [row]},
            headers={"Host": host}, timeout=600,
        )  # fmt: skip
        cold = time.monotonic() - started
        assert response.status_code == 200, response.text
        with capsys.disabled():
            print(f"\nscale-to-zero cold start (first request after idle): {cold:.1f} s")
        assert cold < 600
    finally:
        subprocess.run(
            ["kubectl", "-n", NAMESPACE, "delete", "isvc", name, "--ignore-not-found"],
            capture_output=True,
        )
