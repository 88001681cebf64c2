"""`lifecycle registry show`: a registered version in a screenful; `--json` for everything."""

from __future__ import annotations

from typing import Any


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _metrics(metrics: dict[str, Any], primary: str | None) -> str:
    ordered = sorted(metrics, key=lambda name: (name != primary, name))
    return ", ".join(f"{name}={_number(metrics[name])}" for name in ordered)


def describe_version(metadata: dict[str, Any], aliases: list[str]) -> list[str]:
    """The lines a person reads first: what the model is, how good, whether blessed, from
    which data. Not the contract's per-column details nor the drift reference's rows."""
    primary = metadata.get("primary_metric")
    gate = metadata.get("gate", {})
    lineage = metadata.get("lineage", {})
    inputs = [column["name"] for column in metadata.get("input_schema", {}).get("columns", [])]
    title = f"{metadata.get('model_name')} version {metadata.get('registry_version')}"
    lines = [title + (f" ({', '.join(aliases)})" if aliases else "")]

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            lines.append(f"  {label + ':':<14}{value}")

    add("registered", metadata.get("registered_at"))
    add("family", metadata.get("family"))
    add("task", f"{metadata.get('task')} of '{metadata.get('target')}'")
    if metadata.get("classes"):
        add("classes", ", ".join(map(str, metadata["classes"])))
    add("inputs", f"{len(inputs)} columns: {', '.join(inputs)}" if inputs else None)
    add("test", _metrics(metadata.get("metrics_test", {}), primary))
    add("validation", _metrics(metadata.get("metrics", {}).get("validation", {}), primary))
    if metadata.get("decision_threshold") is not None:
        add("threshold", _number(metadata["decision_threshold"]))
    verdict = "blessed" if gate.get("blessed") else "NOT blessed"
    if gate.get("overridden"):
        verdict += f" (overridden: {gate.get('override_reason')})"
    add("gate", verdict)
    lines += [f"    - {reason}" for reason in gate.get("reasons", [])]
    rows = metadata.get("training_rows")
    source = lineage.get("data_source")
    sha = str(lineage.get("data_sha256", ""))[:12]
    add(
        "data",
        f"{source}"
        + (f" (sha256 {sha}...)" if sha else "")
        + (f", {rows} training rows" if rows else ""),
    )
    add("run", lineage.get("run_id"))
    lines.append("  (--json prints the full metadata: contract, reference, model card, ...)")
    return lines
