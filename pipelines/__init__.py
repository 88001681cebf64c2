"""The pipelines, and the compiled IR YAML that users submit to a Kubeflow cluster."""

from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def pipelines() -> dict:
    """Pipeline name -> pipeline function, for every pipeline the project ships."""
    from kfp_lifecycle.pipelines import deployment, monitoring, training, training_dask

    return {
        training.PIPELINE_NAME: training.training_pipeline,
        deployment.PIPELINE_NAME: deployment.deployment_pipeline,
        monitoring.PIPELINE_NAME: monitoring.monitoring_pipeline,
        training_dask.PIPELINE_NAME: training_dask.training_dask_pipeline,
    }


def compile_all(output_dir: Path = COMPILED_DIR) -> list[Path]:
    from kfp import compiler

    output_dir.mkdir(parents=True, exist_ok=True)
    from kfp_lifecycle.config import reference_yaml

    written = []
    reference = Path(__file__).resolve().parent.parent / "examples" / "reference.yaml"
    if output_dir == COMPILED_DIR and reference.parent.is_dir():  # in a source checkout
        reference.write_text(reference_yaml())
    for name, function in pipelines().items():
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(function, str(path))
        written.append(path)
    return written
