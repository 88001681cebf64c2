"""The pipelines, and the compiled IR YAML that users submit to a Kubeflow cluster."""

from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def pipelines() -> dict:
    """Pipeline name -> pipeline function, for every pipeline the project ships."""
    from kfp_lifecycle.pipelines import deployment, monitoring, scoring, training, training_dask

    return {
        training.PIPELINE_NAME: training.training_pipeline,
        deployment.PIPELINE_NAME: deployment.deployment_pipeline,
        monitoring.PIPELINE_NAME: monitoring.monitoring_pipeline,
        scoring.PIPELINE_NAME: scoring.scoring_pipeline,
        training_dask.PIPELINE_NAME: training_dask.training_dask_pipeline,
    }


def compile_all(output_dir: Path = COMPILED_DIR, image: str | None = None) -> list[Path]:
    """Compile every pipeline; each step runs `image` (default: kfp_lifecycle.image.image())."""
    from kfp import compiler

    from kfp_lifecycle.image import image as chosen_image

    image = chosen_image(image)

    output_dir.mkdir(parents=True, exist_ok=True)
    from kfp_lifecycle.config import reference_yaml

    written = []
    reference = Path(__file__).resolve().parent.parent / "examples" / "reference.yaml"
    if output_dir == COMPILED_DIR and reference.parent.is_dir():  # in a source checkout
        reference.write_text(reference_yaml())
    for name, function in pipelines().items():
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(function, str(path))
        set_executor_image(path, image)
        written.append(path)
    return written


def set_executor_image(path: Path, image: str) -> None:
    """Point every executor of a compiled pipeline at `image`.

    A component's image is fixed when its module is imported (kfp bakes it into nested
    pipelines too), so an image chosen later is set in the IR itself: exactly the executors'
    `image:` lines, checked by parsing the result."""
    import re

    import yaml

    text = path.read_text()
    changed = re.sub(r"(?m)^(\s+image: ).+$", lambda found: found.group(1) + image, text)
    spec = next(yaml.safe_load_all(changed))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    if images != {image}:
        raise RuntimeError(f"{path.name}: executors name {sorted(images)}, not only {image}")
    if changed != text:
        path.write_text(changed)
