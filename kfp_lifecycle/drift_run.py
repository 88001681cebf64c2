"""`lifecycle drift`: check a table against the data a model was trained on, from a terminal or CI.

The reference is the sample of training rows a model bundle keeps (components/register.py);
the current data is one CSV or Parquet file, or every such file under a directory or an
s3:// prefix (an export, a day of logged requests), or a database table or query
(postgresql://host/db?table=events; kfp_lifecycle.sources.sql). Both go through the drift step's own
tests (components/drift.py), so the verdict is the one the monitoring pipeline would reach.

Exit codes, for gating a CI job: 0 no dataset drift, DRIFT_EXIT_CODE (3) dataset drift,
2 bad input (the CLI's code for any one-line error). The dataset verdict is the gate: it
holds when any of the drift step's dataset rules does (a `drift_share` of features drifted,
one of the `top_features` most important features drifted, a PSI above `max_psi`, more than
`max_new_category_rows` of rows with unseen categories; components/drift.py). Features that
drift without meeting a rule are reported but do not fail the run.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kfp_lifecycle.components.drift import (
    DriftOptions,
    DriftResult,
    detect_drift,
    importance_of,
    reference_frame,
    render_report,
)
from kfp_lifecycle.components.ingest import table_sources
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.schema import InputSchema

DRIFT_EXIT_CODE = 3
REPORT_FILE = "drift-report.html"
VERDICT_FILE = "drift-verdict.json"


@dataclass
class DriftRun:
    result: DriftResult
    model_uri: str
    sources: list[str]
    report: Path
    verdict: Path


def drift_options(config: str | None = None, psi: bool = False) -> DriftOptions:
    """The config file's `monitoring.drift` section (defaults without one); `psi` on top."""
    if config:  # the whole config model (every step's options) loads in ~1 s: only if asked
        from kfp_lifecycle.config import load_config

        options = load_config(config).monitoring.drift
    else:
        options = DriftOptions()
    return options.model_copy(update={"psi": True}) if psi else options


def read_current(sources: list[str], schema: InputSchema) -> pd.DataFrame:
    """The sources' rows, one table typed by the model's schema; a file that lacks one of the
    model's input columns is named (extra columns, such as the target, are ignored)."""
    from kfp_lifecycle.components.ingest import read_table

    frames = []
    for source in sources:
        frame = read_table(source)
        missing = [name for name in schema.names if name not in frame.columns]
        if missing:
            raise DataError(f"{source} lacks the model's input column(s): {', '.join(missing)}")
        frames.append(schema.coerce(frame))
    return pd.concat(frames, ignore_index=True)


def run_drift(model: str, current: str, output: str | Path, options: DriftOptions) -> DriftRun:
    """Compare `current` with the reference kept by `model` (a bundle directory, s3:// version
    or REGISTRY/MODEL@ALIAS); write the HTML report and the JSON verdict into `output`."""
    from kfp_lifecycle.registry import bundle_metadata, model_version_of, resolve_reference

    uri = resolve_reference(model)
    metadata = bundle_metadata(uri)
    schema = InputSchema.from_dict(metadata["input_schema"])
    reference = reference_frame(metadata)
    sources = table_sources(current)
    rows = read_current(sources, schema)
    result = detect_drift(
        reference,
        rows,
        options,
        schema=schema,
        contract=metadata.get("contract"),
        importance=importance_of(metadata),
    )
    verdict = {
        "model": uri,
        "model_version": model_version_of(metadata),
        "current": current,
        "files": sources,
        "options": options.model_dump(),
        **result.to_dict(),
    }
    report = render_report(result, reference, rows)
    output = Path(output)
    written = _write_together(
        output,
        {REPORT_FILE: report, VERDICT_FILE: json.dumps(verdict, indent=2) + "\n"},
    )
    return DriftRun(result, uri, sources, written[REPORT_FILE], written[VERDICT_FILE])


def _write_together(directory: Path, contents: dict[str, str]) -> dict[str, Path]:
    """Write every file beside a temporary name first, then rename them all into place:
    a failure part way leaves no new report without its verdict (or the reverse)."""
    directory.mkdir(parents=True, exist_ok=True)
    staged = {}
    try:
        for name, text in contents.items():
            staged[name] = directory / f".{name}.{uuid.uuid4().hex}.part"
            staged[name].write_text(text)
        for name, temporary in staged.items():
            os.replace(temporary, directory / name)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
    return {name: directory / name for name in contents}


def exit_code(result: DriftResult) -> int:
    return DRIFT_EXIT_CODE if result.dataset_drift else 0


def print_findings(run: DriftRun, console: Any = None) -> None:
    """One row per feature, drifted ones first, then the verdict and where the files are."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    result = run.result
    with_psi = any(f.psi is not None for f in result.features)
    table = Table(title=f"Drift against {run.model_uri}", box=box.SIMPLE_HEAD)
    table.add_column("feature", no_wrap=True)
    table.add_column("test")
    for column in ("statistic", "threshold", *(["PSI"] if with_psi else [])):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("drifted", no_wrap=True)
    notes = []  # findings besides each test, whose figures the table shows
    for finding in sorted(result.features, key=lambda f: not f.drifted):
        psi = [f"{finding.psi:.3f}"] if with_psi else []
        table.add_row(
            finding.column,
            finding.test,
            f"{finding.statistic:.4g}",
            f"{finding.threshold:g}",
            *psi,
            "yes" if finding.drifted else "no",
        )
        notes += [
            f"  {finding.column}: {reason}"
            for reason in finding.reasons
            if not reason.startswith(finding.test)
        ]
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    for finding in result.contract:
        console.print(
            f"contract {finding['severity']}: '{finding['column']}' {finding['check']}: "
            f"{finding['message']}",
            highlight=False,
            soft_wrap=True,
        )
    files = f"{len(run.sources)} file(s)" if len(run.sources) > 1 else run.sources[0]
    verdict = "DRIFT" if result.dataset_drift else "no dataset drift"
    console.print(
        f"{verdict}: {len(result.drifted)} of {len(result.features)} features drifted "
        f"({result.drifted_share:.0%}); reference {result.reference_rows} rows, "
        f"current {result.current_rows} rows from {files}",
        highlight=False,
        soft_wrap=True,
    )
    for reason in result.dataset_reasons:
        console.print(f"  - {reason}", highlight=False, soft_wrap=True)
    console.print(f"report: {run.report.absolute()}", highlight=False, soft_wrap=True)
    console.print(f"verdict: {run.verdict.absolute()}", highlight=False, soft_wrap=True)
