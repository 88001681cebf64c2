"""The compiled YAML is what a cluster runs: it must be fresh and use only the project image."""

import yaml

from kfp_lifecycle.image import IMAGE
from kfp_lifecycle.pipelines import COMPILED_DIR, compile_all, pipelines


def test_compiled_pipelines_are_fresh(tmp_path):
    for path in compile_all(tmp_path):
        committed = COMPILED_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run `make compile`"
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `make compile`"
        )


def _executors(name: str) -> dict:
    spec = yaml.safe_load((COMPILED_DIR / f"{name}.yaml").read_text())
    return spec["deploymentSpec"]["executors"]


def test_every_step_runs_in_the_project_image_without_installing_anything():
    for name in pipelines():
        executors = _executors(name)
        assert executors
        for executor in executors.values():
            container = executor["container"]
            assert container["image"] == IMAGE
            command = " ".join(container["command"] + container.get("args", []))
            assert "pip install" not in command and "pip3 install" not in command


def test_side_effect_steps_are_never_cached():
    spec = yaml.safe_load((COMPILED_DIR / "training.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["register"]["cachingOptions"] == {}
