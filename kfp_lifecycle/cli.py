"""`lifecycle`: run, compile and serve the kfp-lifecycle pipelines from a terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.errors import StepCrashed
from kfp_lifecycle.pipelines import COMPILED_DIR  # a path only: the package imports kfp lazily


def _thresholds(pairs: list[str] | None) -> dict[str, float] | None:
    if not pairs:
        return None
    thresholds = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            thresholds[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise LifecycleError(f"--gate expects METRIC=VALUE (e.g. recall=0.6), got '{pair}'")
    return thresholds


def training_config(args: argparse.Namespace) -> Any:
    """The config file (if any) with the command-line flags on top."""
    from kfp_lifecycle.config import LifecycleConfig, load_config, with_overrides

    config = load_config(args.config) if args.config else LifecycleConfig()
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    return with_overrides(
        config,
        {
            "data.source": args.data,
            "data.target": args.target,
            "data.task": args.task,
            "data.metric": args.metric,
            "output": args.output,
            "registry": args.registry,
            "model_name": args.model_name,
            "models.families": families,
            "gate.thresholds": _thresholds(args.gate),
            "gate.primary_threshold": args.threshold,
            "split.validation_fraction": args.validation_fraction,
            "split.test_fraction": args.test_fraction,
            "split.seed": args.seed,
            "time_budget": args.time_budget,
            "engine": args.engine,
        },
    )


def print_summary(summary: dict[str, Any], output: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from kfp_lifecycle.core.tasks import METRICS

    console = Console()
    metric = summary["primary_metric"]
    table = Table(title=f"Leaderboard ({summary['task']}, validation {metric})")
    table.add_column("rank", justify="right")
    table.add_column("model family")
    table.add_column(metric, justify="right")
    ranked = sorted(
        summary["leaderboard"].items(),
        key=lambda item: item[1],
        reverse=METRICS[metric].greater_is_better,
    )
    for rank, (family, score) in enumerate(ranked, start=1):
        label = family + ("  (selected)" if family == summary["best_family"] else "")
        table.add_row(str(rank), label, f"{score:.4f}")
    console.print(table)
    tests = ", ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items())
    console.print(f"selected [bold]{summary['best_family']}[/bold] on test data: {tests}")
    verdict = "[green]BLESSED[/green]" if summary["blessed"] else "[red]NOT BLESSED[/red]"
    console.print(f"gate: {verdict}")
    for reason in summary["reasons"]:
        console.print(f"  - {reason}")
    if any(reason.startswith("FAIL: no metric threshold") for reason in summary["reasons"]):
        console.print(
            f"  hint: rerun with --threshold VALUE (a bound on {metric}) or --gate METRIC=VALUE",
            highlight=False,
        )
    console.print(
        f"registered {summary['model_name']} version {summary['model_version']}: "
        f"{summary['model_uri']}"
    )


def step_printer(verbose: bool) -> Any:
    """One line per finished step with its time (quiet runs), on this command's stdout."""
    if verbose:
        return None
    out = sys.stdout

    def on_step(step: str, status: str, seconds: float) -> None:
        mark = "ok" if status == "SUCCESS" else status.lower()
        print(f"  {step:<28} {mark:<8} {seconds:6.1f} s", file=out, flush=True)

    return on_step


def print_paths(summary: dict[str, Any], summary_file: Path) -> None:
    """The last lines of a run: where its reports, log and summary are."""
    for name, path in summary.get("reports", {}).items():
        print(f"{name + ':':<19} {path}")
    if summary.get("log"):
        print(f"{'log:':<19} {summary['log']}")
    print(f"{'summary:':<19} {summary_file.absolute()}")


def cmd_run(args: argparse.Namespace) -> int:
    from kfp_lifecycle.local_run import SUMMARY_FILE, run_training

    config = training_config(args)
    summary = run_training(config, quiet=not args.verbose, on_step=step_printer(args.verbose))
    print_summary(summary, config.output)
    print_paths(summary, Path(config.output) / SUMMARY_FILE)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kfp_lifecycle.config import parse_config
    from kfp_lifecycle.demo import DEMO_GATE, DEMO_MODEL_NAME, DEMO_TARGET, write_demo_dataset
    from kfp_lifecycle.local_run import SUMMARY_FILE, run_training

    data = write_demo_dataset(Path(args.output) / "data" / "churn.csv")
    print(f"demo data: {data} (generated, deterministic)")
    config = parse_config(
        {
            "data": {"source": str(data), "target": DEMO_TARGET},
            "output": args.output,
            "model_name": DEMO_MODEL_NAME,
            "gate": DEMO_GATE,
        }
    )
    summary = run_training(config, quiet=not args.verbose, on_step=step_printer(args.verbose))
    print_summary(summary, args.output)
    port = 8080
    name = summary["model_name"]
    model = summary["model_uri"]
    if summary["blessed"]:  # the alias is what a person would serve
        model = f"{args.output}/registry/{name}@champion"
    print(
        "\nServe the registered model with KServe's model server:\n"
        f"  .venv/bin/lifecycle serve --model {model} --port {port}\n"
        "Then, from another terminal:\n"
        f"  curl -s localhost:{port}/v1/models/{name}:predict \\\n"
        "    -H 'content-type: application/json' \\\n"
        '    -d \'{"instances": [{"signup_date": "2025-03-01 10:00:00", "age": 41, '
        '"tenure_months": 3, "monthly_charges": 31.5, "support_calls": 4, "plan": "basic", '
        '"contract": "month-to-month", "region": "north", "payment_method": '
        '"electronic-check"}]}\''
    )
    print_paths(summary, Path(args.output) / SUMMARY_FILE)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from kfp_lifecycle.config import LifecycleConfig, load_config, with_overrides
    from kfp_lifecycle.local_run import MONITORING_SUMMARY_FILE, run_monitoring

    config = load_config(args.config) if args.config else LifecycleConfig()
    config = with_overrides(
        config,
        {
            "registry": args.registry,
            "model_name": args.model_name,
            "output": args.output,
            "monitoring.log_uri": args.log,
            "monitoring.labels_uri": args.labels,
            "monitoring.window_days": args.window_days,
            "monitoring.pushgateway": args.pushgateway,
        },
    )
    summary = run_monitoring(
        config, args.start or "", args.end or "", not args.verbose, step_printer(args.verbose)
    )
    start, end = summary["window"]
    print(f"\nwindow {start} .. {end}: {'RETRAIN' if summary['retrain'] else 'KEEP'}")
    for reason in summary["reasons"]:
        print(f"  - {reason}")
    if summary["new_versions"]:
        versions = ", ".join(map(str, summary["new_versions"]))
        print(f"retrained: new version(s) {versions}; champion is {summary['champion']}")
    print_paths(summary, Path(config.output) / MONITORING_SUMMARY_FILE)
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    """0 without dataset drift, drift_run.DRIFT_EXIT_CODE (3) with it: a CI job can gate on it."""
    from kfp_lifecycle.drift_run import drift_options, exit_code, print_findings, run_drift

    run = run_drift(args.model, args.current, args.output, drift_options(args.config, args.psi))
    print_findings(run)
    return exit_code(run.result)


def cmd_score(args: argparse.Namespace) -> int:
    from kfp_lifecycle.drift_run import drift_options
    from kfp_lifecycle.score_run import print_summary, run_scoring, score_options

    options = score_options(
        key_columns=args.key or [],
        chunk_rows=args.chunk_rows,
        max_quarantine_share=args.max_quarantine_share,
        fail_on_drift=args.fail_on_drift,
        drift=drift_options(args.config),
    )
    summary = run_scoring(args.model, args.data, args.output, options, args.in_process)
    print_summary(summary)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from kfp_lifecycle.pipelines import compile_all

    for path in compile_all(Path(args.output_dir), args.image):
        print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from kfp_lifecycle.serving.options import server_options
    from kfp_lifecycle.serving.server import serve

    serve(args.model, **server_options(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from kfp_lifecycle.export import PLURALS, REPORT_MD, export_model

    result = export_model(args.model, args.output, args.format, args.rows)
    parity = result.parity
    print(
        f"wrote {Path(args.output) / result.onnx_file}: {PLURALS[parity.measure]} agree with the "
        f"bundle within {parity.max_scaled_diff:.3g} on {parity.rows} rows "
        f"({result.rows_source}), tolerance {parity.tolerance:g}; report "
        f"{Path(args.output) / REPORT_MD}"
    )
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from kfp_lifecycle import registry as reg

    registry = reg.open_registry(args.registry)
    if args.action == "list":
        rows = reg.describe_versions(registry, args.model)
        if not rows:
            raise LifecycleError(f"model '{args.model}' has no version in {args.registry}")
        table = Table(title=f"{args.model} in {args.registry}")
        for column in ("version", "family", "blessed", "test score", "aliases", "registered at"):
            table.add_column(column)
        for row in rows:
            score = "" if row["test_score"] is None else f"{row['metric']}={row['test_score']:.4f}"
            table.add_row(
                str(row["version"]),
                str(row["family"]),
                "yes" if row["blessed"] else "no",
                score,
                ", ".join(row["aliases"]),
                str(row["registered_at"]),
            )
        Console().print(table)
    elif args.action == "show":
        from kfp_lifecycle.registry_view import describe_version

        version = args.version or _alias_version(registry, args.model, reg.CHAMPION)
        metadata = registry.metadata(args.model, version)
        if args.json:
            print(json.dumps(metadata, indent=2))
        else:
            aliases = sorted(a for a, v in registry.aliases(args.model).items() if v == version)
            print("\n".join(describe_version(metadata, aliases)))
    elif args.action == "promote":
        if args.version is None:
            raise LifecycleError("promote needs --version N")
        reg.promote(registry, args.model, args.version, args.override_reason)
        print(f"champion of '{args.model}' is now version {args.version}")
    elif args.action in ("repair", "remove"):
        return _registry_cleanup(registry, args)
    else:
        version = reg.rollback(registry, args.model)
        print(f"champion of '{args.model}' rolled back to version {version}")
    return 0


def _registry_cleanup(registry: Any, args: argparse.Namespace) -> int:
    """`registry repair` (versions without metadata.json) or `registry remove --version N`."""
    from kfp_lifecycle.registry import repair

    if args.action == "repair":
        removed = repair(registry, args.model)
        print(
            f"removed broken version(s) {', '.join(map(str, removed))}"
            if removed
            else f"model '{args.model}' has no broken version"
        )
        return 0
    if args.version is None:
        raise LifecycleError("remove needs --version N")
    registry.remove_version(args.model, args.version)
    print(f"removed version {args.version} of '{args.model}'")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from kfp_lifecycle.deploy import plan_deploy
    from kfp_lifecycle.rollout_commands import (
        blessed_uri,
        carry_out,
        kserve_api,
        mode_for,
        service_spec,
    )

    uri = blessed_uri(args.model, args.override_reason)
    api = kserve_api(args.dry_run)
    existing = api.get(args.name, args.namespace) if api else None
    spec = service_spec(args, uri, mode_for(api, args.mode, existing), args.canary)
    carry_out(api, plan_deploy(spec, existing, force=args.force), args.dry_run)
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from kfp_lifecycle.rollout_commands import cmd_rollout as run

    return run(args)


def cmd_abtest(args: argparse.Namespace) -> int:
    from kfp_lifecycle.rollout_commands import cmd_abtest as run

    return run(args)


def cmd_shadow(args: argparse.Namespace) -> int:
    from kfp_lifecycle.rollout_commands import cmd_shadow as run

    return run(args)


def cmd_submit(args: argparse.Namespace) -> int:
    from kfp_lifecycle import submit

    params = submit.parse_params(args.param)
    if args.command == "schedule":
        submit.check_cron(args.cron)
    submit.check_params(args.pipeline, params)  # before connecting: a typo costs no round trip
    kfp_client = submit.client(args.host, args.namespace)
    if args.command == "schedule":
        run_id = submit.schedule(
            kfp_client, args.pipeline, params, args.experiment, args.namespace, args.cron, args.name
        )
        print(f"recurring run {run_id}: {args.pipeline} on '{args.cron}'")
        return 0
    result = submit.submit(
        kfp_client, args.host, args.pipeline, params, args.experiment, args.namespace, args.wait
    )
    print(
        f"run {result['run_id']}: {result['url']}" + (f" ({result['state']})" if args.wait else "")
    )
    return 0


def _alias_version(registry: Any, model: str, alias: str) -> int:
    from kfp_lifecycle.core.errors import RegistryError

    found = registry.alias(model, alias)
    if found is None:
        raise RegistryError(f"model '{model}' has no '{alias}' alias; pass --version N")
    return found.version


VERBOSE_HELP = (
    "show KFP's own output (every step's log) and the frameworks' log lines instead of "
    "one line per step"
)


def _rollout_parsers(commands: Any, deploy: argparse.ArgumentParser) -> None:
    """deploy's mode flags, `rollout`, `abtest` and `shadow` (logic: rollout_commands)."""
    from kfp_lifecycle.rollout_commands import add_parsers

    add_parsers(commands, deploy, cmd_deploy, cmd_rollout, cmd_abtest, cmd_shadow)


def build_parser() -> argparse.ArgumentParser:
    from kfp_lifecycle.families import DEFAULT_FAMILIES, FAMILIES

    parser = argparse.ArgumentParser(
        prog="lifecycle", description="Train, register and serve tabular models with KFP."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a pipeline locally through kfp.local")
    run_pipelines = run.add_subparsers(dest="pipeline", required=True)
    training = run_pipelines.add_parser("training", help="train, evaluate, gate and register")
    training.add_argument(
        "--config", help="pipeline configuration (YAML; see examples/); flags override it"
    )
    training.add_argument(
        "--data",
        help="CSV or Parquet file (a path, file:// or s3:// URI), or a database URL "
        "(postgresql://host/db?table=events; password from LIFECYCLE_DB_PASSWORD)",
    )
    training.add_argument("--target", help="column to predict")
    training.add_argument("--task", choices=["auto", "classification", "regression"])
    training.add_argument("--metric", help="primary metric (default: roc_auc or rmse)")
    training.add_argument("--output", help="output directory (default: lifecycle-output)")
    training.add_argument(
        "--families",
        help=f"comma-separated model families (default: {','.join(DEFAULT_FAMILIES)}); "
        f"known: {', '.join(FAMILIES)}",
    )
    training.add_argument(
        "--threshold",
        type=float,
        help="gate bound on the primary metric (floor, or ceiling for errors)",
    )
    training.add_argument(
        "--gate",
        action="append",
        metavar="METRIC=VALUE",
        help="gate threshold on any metric; repeatable; replaces the config's thresholds "
        "(with none at all the gate blesses nothing)",
    )
    training.add_argument(
        "--registry",
        help="model registry: a directory, file:// or s3:// URI (default: OUTPUT/registry)",
    )
    training.add_argument("--model-name", help="registered model name (default: from the target)")
    training.add_argument("--validation-fraction", type=float)
    training.add_argument("--test-fraction", type=float)
    training.add_argument("--seed", type=int)
    training.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="seconds for the whole run, shared by tuning, diagnosis and explanation "
        "(default 600; 0: none)",
    )
    training.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    training.add_argument(
        "--engine", choices=["pandas", "dask", "auto"], help="data stage and training engine"
    )
    training.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="run the training pipeline on the built-in dataset")
    demo.add_argument("--output", default="demo-output")
    demo.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    demo.set_defaults(handler=cmd_demo)

    monitor = commands.add_parser(
        "monitor", help="run the monitoring pipeline locally: drift, quality, retraining"
    )
    monitor.add_argument("--config", help="pipeline configuration (its monitoring: section)")
    monitor.add_argument("--registry", help="registry holding the served champion")
    monitor.add_argument("--model-name", help="registered model name")
    monitor.add_argument("--log", help="request log: a directory or s3:// prefix")
    monitor.add_argument("--labels", help="labels that arrived later (request_id, target)")
    monitor.add_argument("--start", help="first day, YYYY-MM-DD (default: from --window-days)")
    monitor.add_argument("--end", help="last day, YYYY-MM-DD (default: today, UTC)")
    monitor.add_argument("--window-days", type=int, help="days per window (default 1)")
    monitor.add_argument("--pushgateway", help="Prometheus Pushgateway URL for the gauges")
    monitor.add_argument("--output", help="output directory (default: lifecycle-output)")
    monitor.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    monitor.set_defaults(handler=cmd_monitor)

    drift = commands.add_parser(
        "drift",
        help="compare a table with a model's training reference (exit 3 on dataset drift)",
    )
    drift.add_argument(
        "--model",
        required=True,
        help="bundle directory, s3:// version URI or REGISTRY/MODEL@ALIAS (or @VERSION)",
    )
    drift.add_argument(
        "--current",
        required=True,
        help="CSV or Parquet file, or a directory or s3:// prefix: every CSV and Parquet under "
        "it, or a database URL (postgresql://host/db?table=events)",
    )
    drift.add_argument("--config", help="pipeline configuration (its monitoring.drift: section)")
    drift.add_argument("--psi", action="store_true", help="also compute the stability index")
    drift.add_argument(
        "--output",
        default="lifecycle-output",
        help="directory for drift-report.html and drift-verdict.json (default: %(default)s)",
    )
    drift.set_defaults(handler=cmd_drift)

    score = commands.add_parser(
        "score", help="batch-score a table with a registered model (kfp.local), in chunks"
    )
    score.add_argument(
        "--model", required=True, help="REGISTRY/MODEL@champion (or @VERSION), or a version URI"
    )
    score.add_argument(
        "--data", required=True, help="CSV or Parquet file, or a directory or s3:// prefix"
    )
    score.add_argument(
        "--output", required=True, help="new directory or s3:// prefix for the predictions"
    )
    score.add_argument(
        "--key", action="append", metavar="COLUMN", help="key column to keep; repeatable"
    )
    score.add_argument("--chunk-rows", type=int, default=100_000, help="default %(default)s")
    score.add_argument(
        "--max-quarantine-share",
        type=float,
        default=0.01,
        help="fail above this share of rows breaking the schema (default %(default)s)",
    )
    score.add_argument("--fail-on-drift", action="store_true", help="fail on dataset drift")
    score.add_argument("--config", help="pipeline configuration (its monitoring.drift: section)")
    score.add_argument(
        "--in-process", action="store_true", help="skip kfp.local: same step, this process"
    )
    score.set_defaults(handler=cmd_score)

    compile_ = commands.add_parser("compile", help="compile the pipelines to KFP IR YAML")
    compile_.add_argument("--output-dir", default=str(COMPILED_DIR))
    compile_.add_argument(
        "--image",
        metavar="REGISTRY/NAME:TAG",
        help="image every step runs (default: $LIFECYCLE_IMAGE, else the package's own)",
    )
    compile_.set_defaults(handler=cmd_compile)

    serve = commands.add_parser("serve", help="serve a model bundle with KServe's model server")
    serve.add_argument(
        "--model",
        required=True,
        help="bundle directory (a registry version), or REGISTRY/MODEL@ALIAS, e.g. "
        "demo-output/registry/churn@champion",
    )
    from kfp_lifecycle.serving.options import add_server_options

    add_server_options(serve)
    serve.set_defaults(handler=cmd_serve)

    export = commands.add_parser(
        "export", help="export a model bundle as one ONNX model, checked against the bundle"
    )
    export.add_argument(
        "--model",
        required=True,
        help="bundle directory, s3:// version URI or REGISTRY/MODEL@ALIAS (or @VERSION)",
    )
    export.add_argument("--format", default="onnx", choices=["onnx"], help="(default: onnx)")
    export.add_argument("--output", required=True, help="directory for model.onnx and its report")
    export.add_argument(
        "--rows",
        help="CSV or Parquet file of rows to check the export on (default: the reference "
        "sample kept with a registered version)",
    )
    export.set_defaults(handler=cmd_export)

    deploy = commands.add_parser("deploy", help="deploy a registered model as a KServe service")
    deploy.add_argument("--model", required=True, help="s3:// version URI or REGISTRY/MODEL@ALIAS")
    deploy.add_argument("--name", required=True, help="InferenceService name")
    deploy.add_argument("--namespace", default="kfp-lifecycle")
    deploy.add_argument("--canary", type=int, help="canary traffic percent for an update (10)")
    deploy.add_argument("--service-account", default="kfp-lifecycle-serving")
    deploy.add_argument("--override-reason", default="", help="deploy a model the gate refused")
    deploy.add_argument(
        "--force", action="store_true", help="replace a canary in progress (else refused)"
    )
    deploy.add_argument("--dry-run", action="store_true", help="print, change nothing")
    _rollout_parsers(commands, deploy)

    for verb, text in (("submit", "run a compiled pipeline on a Kubeflow cluster"),
                       ("schedule", "run a compiled pipeline on a schedule")):  # fmt: skip
        command = commands.add_parser(verb, help=text)
        command.add_argument("pipeline", help="training, deployment, ...")
        command.add_argument(
            "--host", required=True, help="KFP API/UI URL, e.g. http://localhost:8080"
        )
        command.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
        command.add_argument("--experiment", default="kfp-lifecycle")
        command.add_argument("--param", action="append", metavar="NAME=VALUE", help="repeatable")
        if verb == "submit":
            command.add_argument("--wait", action="store_true", help="wait for the run to end")
        else:
            command.add_argument("--cron", required=True, help="six fields, e.g. '0 0 3 * * *'")
            command.add_argument("--name", required=True, help="recurring run name")
        command.set_defaults(handler=cmd_submit)

    registry = commands.add_parser("registry", help="list, inspect, promote or roll back models")
    registry.add_argument(
        "action",
        choices=["list", "show", "promote", "rollback", "repair", "remove"],
        help="repair: remove the versions without metadata.json (a registration that never "
        "finished; run it while no registration runs); remove: delete --version N",
    )
    registry.add_argument("--registry", required=True, help="a directory, file:// or s3:// URI")
    registry.add_argument("--model", required=True, help="registered model name")
    registry.add_argument("--version", type=int, help="version (show: default champion)")
    registry.add_argument(
        "--override-reason",
        default="",
        help="promote a version the gate did not bless, accepting the risk (recorded reason)",
    )
    registry.add_argument("--json", action="store_true", help="show: the full metadata as JSON")
    registry.set_defaults(handler=cmd_registry)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kfp_lifecycle.console import show_logs

    args = build_parser().parse_args(argv)
    show_logs(verbose=getattr(args, "verbose", False))  # the library logs; this decides who sees
    try:
        return args.handler(args)
    except LifecycleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepCrashed as error:  # a step's bug: one line here, the traceback in its log
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
