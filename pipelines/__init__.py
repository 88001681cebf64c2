"""The pipelines, and the compiled IR YAML that users submit to a Kubeflow cluster."""

from __future__ import annotations

from pathlib import Path

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def pipelines() -> dict:
    """Pipeline name -> pipeline function, for every pipeline the project ships."""
    from kfp_lifecycle.pipelines.training import PIPELINE_NAME, training_pipeline

    return {PIPELINE_NAME: training_pipeline}


def compile_all(output_dir: Path = COMPILED_DIR) -> list[Path]:
    from kfp import compiler

    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, function in pipelines().items():
        path = output_dir / f"{name}.yaml"
        compiler.Compiler().compile(function, str(path))
        written.append(path)
    return written
