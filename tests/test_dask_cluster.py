"""A run's DaskCluster on Kubernetes: the body, the exact API requests, deletion on failure.

The Kubernetes API server is the one boundary faked (tests/kube_api.py, over HTTP on
127.0.0.1, reached by the real `kubernetes` client); the training-dask pipeline runs through
kfp.local with its steps pointed at that server by a kubeconfig.
"""

import json
import re
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml
from kube_api import FakeKubeApi

from kfp_lifecycle.cluster import S3_CONFIG_MAP, S3_SECRET
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.dask_cluster import (
    API_RULES,
    MAX_NAME_LENGTH,
    RUN_LABEL,
    ClusterSpec,
    DaskClusterApi,
    build_dask_cluster,
    cluster_name,
    parse_choice,
    scheduler_address,
    start_cluster,
    stop_cluster,
)
from kfp_lifecycle.image import IMAGE
from kfp_lifecycle.pipelines import COMPILED_DIR

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "crds" / "kubernetes.dask.org" / "daskcluster_v1.json"
NS = "kfp-lifecycle"
RUN_ID = "0b6c4f1e-3c1d-4d8e-9a59-2f7c1d0e8a41"
NAME = f"lifecycle-dask-{RUN_ID}"
CLUSTERS = f"/apis/kubernetes.dask.org/v1/namespaces/{NS}/daskclusters"
SERVICE = f"/api/v1/namespaces/{NS}/services/{NAME}-scheduler"
SLICES = (
    f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
    f"?labelSelector=kubernetes.io%2Fservice-name%3D{NAME}-scheduler"
)
# The operator's own rule for cluster names (dask_kubernetes.constants.VALID_CLUSTER_NAME)
# and Kubernetes' for Service names (RFC 1035 label): <name>-scheduler must be one.
OPERATOR_NAME = re.compile(rf"^(?=.{{,{MAX_NAME_LENGTH}}}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SERVICE_NAME = re.compile(r"^(?=.{1,63}$)[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


@pytest.fixture
def fake():
    server = FakeKubeApi()
    yield server
    server.close()


def spec(**changes) -> ClusterSpec:
    return ClusterSpec(name=cluster_name(RUN_ID), run_id=RUN_ID, **changes)


# --- the body --------------------------------------------------------------------------


def test_the_body_validates_against_the_operators_crd_and_runs_the_project_image(schema):
    body = build_dask_cluster(spec(workers=3, worker_memory="6Gi", worker_cpu="2"))
    jsonschema.validate(body, schema)
    assert (body["apiVersion"], body["kind"]) == ("kubernetes.dask.org/v1", "DaskCluster")
    assert body["metadata"]["name"] == NAME and body["metadata"]["namespace"] == NS
    assert body["metadata"]["labels"][RUN_LABEL] == RUN_ID
    worker_group = body["spec"]["worker"]
    assert worker_group["replicas"] == 3
    (worker,) = worker_group["spec"]["containers"]
    (scheduler,) = body["spec"]["scheduler"]["spec"]["containers"]
    assert worker["resources"] == {
        "requests": {"cpu": "2", "memory": "6Gi"},
        "limits": {"cpu": "2", "memory": "6Gi"},
    }
    assert worker["command"] == ["dask", "worker"] and scheduler["command"] == ["dask", "scheduler"]
    for pod, container in (
        (worker_group["spec"], worker),
        (body["spec"]["scheduler"]["spec"], scheduler),
    ):
        assert container["image"] == IMAGE
        context = {**pod["securityContext"], **container["securityContext"]}
        assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
        assert context["allowPrivilegeEscalation"] is False
        # the one writable place is an emptyDir: spill files and dask's temporary directory
        (mount,) = container["volumeMounts"]
        assert {"name": mount["name"], "emptyDir": {}} in pod["volumes"]
        # workers read s3:// data with the run's S3 settings, by name only
        assert container["envFrom"] == [
            {"secretRef": {"name": S3_SECRET}},
            {"configMapRef": {"name": S3_CONFIG_MAP, "optional": True}},
        ]
    service = body["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": NAME, "dask.org/component": "scheduler"}
    assert {(p["name"], p["port"]) for p in service["ports"]} == {
        ("tcp-comm", 8786),
        ("http-dashboard", 8787),
    }
    assert scheduler["readinessProbe"]["httpGet"] == {"port": "http-dashboard", "path": "/health"}


def test_the_schema_rejects_what_the_operator_would(schema):
    """The schema is strict enough to catch a misspelt field (so validating means something)."""
    body = build_dask_cluster(spec())
    body["spec"]["worker"]["replicaz"] = 2
    with pytest.raises(jsonschema.ValidationError, match="replicaz"):
        jsonschema.validate(body, schema)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "dask workers must be 1..1000, got 0"),
        ({"worker_memory": "lots"}, "dask worker memory 'lots' is not a Kubernetes quantity"),
        ({"worker_cpu": "-1"}, "dask worker cpu '-1' is not a Kubernetes quantity"),
        ({"idle_timeout": -5}, "dask idle timeout must be >= 0 seconds, got -5"),
    ],
)
def test_bad_sizes_are_refused_in_one_line_before_any_request(fake, changes, message):
    with pytest.raises(LifecycleError, match=re.escape(message)):
        start_cluster(DaskClusterApi(fake.client()), spec(**changes), timeout_seconds=1)
    assert fake.requests == []


def test_cluster_names_are_valid_for_the_operator_and_the_scheduler_service():
    for run_id in (RUN_ID, str(uuid.uuid4()), "24612617", "Run_ID with spaces!", "x" * 200):
        name = cluster_name(run_id)
        assert OPERATOR_NAME.match(name), name
        assert SERVICE_NAME.match(f"{name}-scheduler"), name
        assert cluster_name(run_id) == name  # the delete step finds what the create step made
    assert cluster_name(RUN_ID) == NAME
    assert cluster_name("a" * 100) != cluster_name("a" * 101)  # long ids keep a distinct digest
    with pytest.raises(LifecycleError, match="a run id is needed"):
        cluster_name(" ")


def test_the_dask_cluster_parameter():
    assert parse_choice("").mode == "local"
    assert parse_choice("ephemeral").mode == "ephemeral"
    given = parse_choice(" tcp://dask-scheduler.analytics.svc:8786 ")
    assert (given.mode, given.address) == ("address", "tcp://dask-scheduler.analytics.svc:8786")
    with pytest.raises(LifecycleError, match=r"dask_cluster 'yes please' is neither empty"):
        parse_choice("yes please")
    with pytest.raises(LifecycleError, match="tcp://host:8786"):
        parse_choice("dask-scheduler:8786")  # no scheme


# --- the requests ----------------------------------------------------------------------


def test_start_creates_the_cluster_and_waits_for_a_ready_scheduler(fake):
    fake.operator.ready_after = 3  # Running, Service there, but the scheduler not yet ready
    address = start_cluster(DaskClusterApi(fake.client()), spec(), poll_seconds=0.01)
    assert address == f"tcp://{NAME}-scheduler.{NS}.svc:8786" == scheduler_address(NAME, NS)
    (create, *reads) = fake.requests
    assert create == ("POST", CLUSTERS, build_dask_cluster(spec()))
    poll = [("GET", f"{CLUSTERS}/{NAME}", None), ("GET", SERVICE, None), ("GET", SLICES, None)]
    assert reads == poll * 3  # until the endpoint is ready, not merely until phase Running
    assert not [r for r in fake.requests if r[0] == "DELETE"]


def test_a_scheduler_that_never_gets_ready_is_deleted_and_the_error_says_why(fake):
    fake.operator.ready_after = None
    with pytest.raises(LifecycleError) as error:
        start_cluster(DaskClusterApi(fake.client()), spec(), timeout_seconds=0.2, poll_seconds=0.05)
    assert str(error.value) == (
        f"the scheduler of DaskCluster {NS}/{NAME} was not ready after 0s (phase: Running): "
        f"kubectl -n {NS} get pods -l dask.org/cluster-name={NAME}; "
        f"DaskCluster {NS}/{NAME} deleted"
    )
    assert fake.requests[-1] == ("DELETE", f"{CLUSTERS}/{NAME}", None)
    assert fake.clusters == {}


def test_a_cluster_the_operator_rejects_is_deleted_at_once(fake):
    fake.operator.phase = "Error"
    with pytest.raises(LifecycleError, match=r"rejected DaskCluster .* \(phase Error\)"):
        start_cluster(DaskClusterApi(fake.client()), spec(), timeout_seconds=60, poll_seconds=0.01)
    methods = [method for method, _, _ in fake.requests]
    assert methods == ["POST", "GET", "DELETE"]


def test_a_refused_create_names_the_cluster_and_the_status(fake):
    api = DaskClusterApi(fake.client())
    start_cluster(api, spec(), poll_seconds=0.01)
    with pytest.raises(LifecycleError, match=f"creating DaskCluster {NS}/{NAME} failed: 409"):
        start_cluster(api, spec(), poll_seconds=0.01)


def test_stop_deletes_exactly_that_cluster_and_a_missing_one_is_no_error(fake):
    api = DaskClusterApi(fake.client())
    start_cluster(api, spec(), poll_seconds=0.01)
    fake.requests.clear()
    assert stop_cluster(api, NAME, NS) is True
    assert stop_cluster(api, NAME, NS) is False
    assert fake.requests == [("DELETE", f"{CLUSTERS}/{NAME}", None)] * 2
    assert fake.clusters == {}


def test_every_request_is_one_the_role_grants(fake):
    """API_RULES (what manifests/base/dask/rbac.yaml grants) covers each request made."""
    api = DaskClusterApi(fake.client())
    start_cluster(api, spec(), poll_seconds=0.01)
    stop_cluster(api, NAME, NS)
    verbs = {"POST": "create", "DELETE": "delete"}
    granted = {(group, resource, verb) for group, resource, rule in API_RULES for verb in rule}
    used = set()
    for method, path, _ in fake.requests:
        route = path.split("?")[0].split("/")
        group = "" if route[1] == "api" else route[2]
        resource = route[route.index("namespaces") + 2]
        named = len(route) > route.index("namespaces") + 3
        verb = verbs.get(method) or ("get" if named else "list")
        used.add((group, resource, verb))
    assert used == granted


@pytest.fixture
def kubeconfig(fake, tmp_path, monkeypatch):
    """The steps' own client setup (in-cluster first, then a kubeconfig) finds the fake."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))
    monkeypatch.setenv("KUBECONFIG", path)  # for the steps kfp.local runs in new processes
    # the client read KUBECONFIG when it was first imported in this process
    from kubernetes import client
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", path)
    before = client.Configuration.get_default_copy()
    yield fake
    client.Configuration.set_default(before)  # loading the kubeconfig replaced the default


def test_the_steps_create_only_for_ephemeral_and_pass_an_address_on(kubeconfig):
    from kfp_lifecycle.components.dask_cluster import create_dask_cluster, delete_dask_cluster

    create, delete = create_dask_cluster.python_func, delete_dask_cluster.python_func
    given = "tcp://dask-scheduler.analytics.svc:8786"
    assert create(dask_cluster=given, run_id=RUN_ID) == given
    assert create(dask_cluster="", run_id=RUN_ID) == ""
    delete(dask_cluster=given, run_id=RUN_ID)
    delete(dask_cluster="", run_id=RUN_ID)
    delete(dask_cluster="not a value", run_id=RUN_ID)  # create refused it: nothing to delete
    assert kubeconfig.requests == []  # someone else's scheduler is never touched
    with pytest.raises(LifecycleError, match="dask_cluster 'not a value' is neither"):
        create(dask_cluster="not a value", run_id=RUN_ID)

    address = create(dask_cluster="ephemeral", run_id=RUN_ID, workers=1, timeout_seconds=30)
    assert address == scheduler_address(NAME, NS)
    (post,) = [r for r in kubeconfig.requests if r[0] == "POST"]
    assert post == ("POST", CLUSTERS, build_dask_cluster(spec(workers=1)))
    delete(dask_cluster="ephemeral", run_id=RUN_ID)
    assert kubeconfig.requests[-1] == ("DELETE", f"{CLUSTERS}/{NAME}", None)
    assert kubeconfig.clusters == {}


# --- the pipeline ----------------------------------------------------------------------


def _pipeline(name: str) -> dict:
    return next(yaml.safe_load_all((COMPILED_DIR / f"{name}.yaml").read_text()))


def test_training_dask_deletes_its_cluster_in_an_exit_handler_and_training_is_unchanged():
    spec_ = _pipeline("training-dask")
    root = spec_["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "delete-dask-cluster"}
    cleanup = root["delete-dask-cluster"]
    assert cleanup["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert cleanup["dependentTasks"] == ["exit-handler-1"]
    assert cleanup["cachingOptions"] == {}  # never skipped as "already done"
    run_id = cleanup["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"]
    assert run_id == "{{$.pipeline_job_uuid}}"
    inside = spec_["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert set(inside) == {"create-dask-cluster", "training"}
    assert inside["create-dask-cluster"]["cachingOptions"] == {}
    assert inside["training"]["dependentTasks"] == ["create-dask-cluster"]
    assert inside["training"]["componentRef"]["name"] == "comp-training"  # the whole pipeline
    # the default pipeline knows nothing of Dask clusters
    training = _pipeline("training")
    assert not [n for n in training["components"] if "dask" in n or "exit-handler" in n]
    # every training parameter is a training-dask parameter, with the same default, except
    # the engine (dask) and the scheduler (the cluster step's output, not a parameter)
    outer = spec_["root"]["inputDefinitions"]["parameters"]
    for name, definition in training["root"]["inputDefinitions"]["parameters"].items():
        if name not in ("engine", "dask_scheduler"):
            assert outer[name] == definition, name
    assert outer["dask_cluster"]["defaultValue"] == "ephemeral"
    assert outer["engine"]["defaultValue"] == "dask"
    assert training["root"]["inputDefinitions"]["parameters"]["engine"]["defaultValue"] == "pandas"
    assert "dask_scheduler" not in outer


# The steps that open a Dask client (kfp_lifecycle/dask_engine/steps.py); features and
# balance only read a sample, with no cluster.
CLIENT_STEPS = {"ingest", "validate", "profile", "clean", "split", "preprocess", "train"}


def test_every_dask_step_of_training_dask_connects_to_the_runs_cluster():
    """create-dask-cluster's output is the nested training pipeline's dask_scheduler, and
    every step that opens a Dask client, the trainings inside the loop too, takes it."""
    spec_ = _pipeline("training-dask")
    components = spec_["components"]
    nested = components["comp-exit-handler-1"]["dag"]["tasks"]["training"]
    assert nested["inputs"]["parameters"]["dask_scheduler"] == {
        "taskOutputParameter": {
            "outputParameterKey": "Output",
            "producerTask": "create-dask-cluster",
        }
    }
    taking = {
        name.removeprefix("comp-")
        for name, component in components.items()
        if "dask_scheduler" in component.get("inputDefinitions", {}).get("parameters", {})
        and "executorLabel" in component
    }
    assert taking == CLIENT_STEPS

    seen = set()

    def walk(component: str, scheduler: str) -> None:
        """Follow the DAG (and its loops) down to the steps; `scheduler` is the name the
        nested pipeline's dask_scheduler input has in `component`."""
        for task, spec in components[component]["dag"]["tasks"].items():
            child = spec["componentRef"]["name"]
            given = spec["inputs"].get("parameters", {})
            if "dag" in components[child]:
                passed = [
                    k for k, v in given.items() if v == {"componentInputParameter": scheduler}
                ]
                for name in passed:
                    walk(child, name)
            elif child.removeprefix("comp-") in CLIENT_STEPS:
                assert given["dask_scheduler"] == {"componentInputParameter": scheduler}, task
                seen.add(task)

    walk("comp-training", "dask_scheduler")
    assert seen == CLIENT_STEPS
    parameters = components["comp-training"]["inputDefinitions"]["parameters"]
    assert parameters["dask_scheduler"]["defaultValue"] == ""  # training alone: as before


@pytest.mark.pipeline
def test_a_failed_training_run_still_deletes_its_cluster(kubeconfig, tmp_path):
    """kfp.local runs the real pipeline; ingest fails on a missing file; the exit step deletes."""
    from kfp_lifecycle.errors import StepFailed
    from kfp_lifecycle.local_run import run_local
    from kfp_lifecycle.pipelines.training_dask import training_dask_pipeline

    fake = kubeconfig
    missing = tmp_path / "no-such-table.csv"
    arguments = {
        "data": str(missing),
        "target": "churned",
        "registry": str(tmp_path / "registry"),
        "model_name": "churn",
        "dask_workers": 3,
        "dask_timeout_seconds": 30,
    }
    with pytest.raises(StepFailed, match="step 'ingest' failed"):
        run_local(training_dask_pipeline, arguments, tmp_path / "run")
    posts = [r for r in fake.requests if r[0] == "POST"]
    deletes = [r for r in fake.requests if r[0] == "DELETE"]
    (post,) = posts
    name = post[2]["metadata"]["name"]
    run_id = post[2]["metadata"]["labels"][RUN_LABEL]
    assert name == cluster_name(run_id)
    assert post[1] == CLUSTERS and post[2]["spec"]["worker"]["replicas"] == 3
    assert deletes == [("DELETE", f"{CLUSTERS}/{name}", None)]
    assert fake.requests.index(deletes[0]) == len(fake.requests) - 1  # the last thing done
    assert fake.clusters == {}


def test_the_readmes_dask_command_names_only_parameters_the_pipeline_takes():
    import shlex

    from kfp_lifecycle.submit import check_params, parse_params

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The Dask engine on Kubernetes") :]
    block = section[
        section.index("```bash") + 7 : section.index("```", section.index("```bash") + 7)
    ]
    tokens = shlex.split(block.replace("\\\n", " "), comments=True)
    assert tokens[:3] == [".venv/bin/lifecycle", "submit", "training-dask"]
    pairs = [tokens[i + 1] for i, token in enumerate(tokens) if token == "--param"]
    params = parse_params(pairs)
    check_params("training-dask", params)  # raises on a parameter the pipeline does not take
    assert params["dask_workers"] == 4


def test_the_bodys_commands_start_a_real_dask_cluster(tmp_path):
    """The scheduler and worker containers' commands, run here as the pods would run them.

    Only the addresses change (127.0.0.1 and free ports instead of 0.0.0.0 and the fixed
    ones); the worker finds the scheduler through DASK_SCHEDULER_ADDRESS and is named by
    DASK_WORKER_NAME, the two variables the operator sets in worker pods.
    """
    import os
    import shutil
    import subprocess
    import sys
    import time

    import httpx
    from server_process import free_port

    pytest.importorskip("distributed", reason="Dask (distributed) is not installed here")
    dask = shutil.which("dask", path=str(Path(sys.executable).parent))
    assert dask, "distributed is installed but its `dask` command is not beside python"
    body = build_dask_cluster(spec())
    (scheduler,) = body["spec"]["scheduler"]["spec"]["containers"]
    (worker,) = body["spec"]["worker"]["spec"]["containers"]
    port, dashboard, worker_dashboard = free_port(), free_port(), free_port()
    local = {
        "0.0.0.0": "127.0.0.1",
        "8786": str(port),
        ":8787": f"127.0.0.1:{dashboard}",
        ":8788": f"127.0.0.1:{worker_dashboard}",
        "/tmp": str(tmp_path),
    }
    env = {**os.environ, **{e["name"]: local.get(e["value"], e["value"]) for e in worker["env"]}}
    env["DASK_SCHEDULER_ADDRESS"] = f"tcp://127.0.0.1:{port}"
    env["DASK_WORKER_NAME"] = "lifecycle-dask-test-default-worker-1"

    def run(container: dict) -> subprocess.Popen:
        args = [local.get(arg, arg) for arg in container["args"]]
        args = [arg.replace("$(DASK_WORKER_NAME)", env["DASK_WORKER_NAME"]) for arg in args]
        log = open(tmp_path / f"{container['name']}.log", "wb")  # noqa: SIM115 (kept open)
        command = [dask, *container["command"][1:], *args]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    processes = [run(scheduler)]
    try:
        probe = scheduler["readinessProbe"]["httpGet"]
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{dashboard}{probe['path']}").is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()[-2000:]
            time.sleep(0.5)
        processes.append(run(worker))
        from distributed import Client

        with Client(env["DASK_SCHEDULER_ADDRESS"], timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
            (info,) = client.scheduler_info()["workers"].values()
            assert info["name"] == env["DASK_WORKER_NAME"]
            assert info["local_directory"].startswith(str(tmp_path))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
