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
        label = family + ("  (champion)" if family == summary["champion"] else "")
        table.add_row(str(rank), label, f"{score:.4f}")
    console.print(table)
    tests = ", ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items())
    console.print(f"champion [bold]{summary['champion']}[/bold] on test data: {tests}")
    verdict = "[green]BLESSED[/green]" if summary["blessed"] else "[red]NOT BLESSED[/red]"
    console.print(f"gate: {verdict}")
    for reason in summary["reasons"]:
        console.print(f"  - {reason}")
    console.print(
        f"registered {summary['model_name']} version {summary['model_version']}: "
        f"{summary['model_uri']}"
    )
    console.print(f"summary: {Path(output).absolute() / 'summary.json'}")


def cmd_run(args: argparse.Namespace) -> int:
    from kfp_lifecycle.local_run import run_training

    config = training_config(args)
    summary = run_training(config)
    print_summary(summary, config.output)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kfp_lifecycle.config import parse_config
    from kfp_lifecycle.demo import DEMO_GATE, DEMO_MODEL_NAME, DEMO_TARGET, write_demo_dataset
    from kfp_lifecycle.local_run import run_training

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
    summary = run_training(config)
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
    summary = run_monitoring(config, args.start or "", args.end or "")
    start, end = summary["window"]
    print(f"\nwindow {start} .. {end}: {'RETRAIN' if summary['retrain'] else 'KEEP'}")
    for reason in summary["reasons"]:
        print(f"  - {reason}")
    if summary["new_versions"]:
        versions = ", ".join(map(str, summary["new_versions"]))
        print(f"retrained: new version(s) {versions}; champion is {summary['champion']}")
    print(f"summary: {Path(config.output).absolute() / MONITORING_SUMMARY_FILE}")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    """0 without dataset drift, drift_run.DRIFT_EXIT_CODE (3) with it: a CI job can gate on it."""
    from kfp_lifecycle.drift_run import drift_options, exit_code, print_findings, run_drift

    run = run_drift(args.model, args.current, args.output, drift_options(args.config, args.psi))
    print_findings(run)
    return exit_code(run.result)


def cmd_compile(args: argparse.Namespace) -> int:
    from kfp_lifecycle.pipelines import compile_all

    for path in compile_all(Path(args.output_dir)):
        print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from kfp_lifecycle.serving.server import serve

    serve(args.model, port=args.port, name=args.name)
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
            print(f"model '{args.model}' has no version in {args.registry}")
            return 0
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
        version = args.version or _alias_version(registry, args.model, reg.CHAMPION)
        print(json.dumps(registry.metadata(args.model, version), indent=2))
    elif args.action == "promote":
        if args.version is None:
            raise LifecycleError("promote needs --version N")
        reg.promote(registry, args.model, args.version, args.override_reason)
        print(f"champion of '{args.model}' is now version {args.version}")
    else:
        version = reg.rollback(registry, args.model)
        print(f"champion of '{args.model}' rolled back to version {version}")
    return 0


def _kserve_api(dry_run: bool) -> Any:
    """The cluster's API, or None in a dry run that cannot reach one."""
    from kfp_lifecycle.deploy import KServeApi

    try:
        return KServeApi()
    except Exception as error:  # no kubeconfig, no in-cluster config
        if dry_run:
            print(f"# no cluster reachable ({type(error).__name__}); showing a first deploy")
            return None
        raise LifecycleError(f"no Kubernetes cluster reachable: {error}") from None


def _carry_out(api: Any, requests: list, dry_run: bool) -> None:
    for request in requests:
        if request.note:
            print(f"# {request.note}")
        if request.verb == "create" and dry_run:
            import yaml

            print(yaml.safe_dump(request.body, sort_keys=False), end="")
        print(f"# kubectl equivalent:\n{request.kubectl()}" if not dry_run else request.kubectl())
        if not dry_run:
            api.apply(request)


def cmd_deploy(args: argparse.Namespace) -> int:
    from kfp_lifecycle.deploy import ServiceSpec, plan_deploy
    from kfp_lifecycle.registry import bundle_metadata, resolve_reference

    uri = resolve_reference(args.model)
    if not uri.startswith("s3://"):
        raise LifecycleError(
            f"{uri} is not on S3: a cluster loads models from a registry on S3 (s3://...); "
            "serve a local bundle with `lifecycle serve`"
        )
    gate = bundle_metadata(uri).get("gate", {})
    if not gate.get("blessed") and not args.override_reason:
        raise LifecycleError(
            f"{uri} was not blessed by the gate "
            f"({'; '.join(gate.get('reasons', [])) or 'no decision'}); "
            "deploying it needs --override-reason"
        )
    spec = ServiceSpec(
        name=args.name,
        storage_uri=uri,
        namespace=args.namespace,
        service_account=args.service_account,
        canary_percent=args.canary,
    )
    api = _kserve_api(args.dry_run)
    existing = api.get(args.name, args.namespace) if api else None
    _carry_out(api, plan_deploy(spec, existing, force=args.force), args.dry_run)
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from kfp_lifecycle import deploy

    api = _kserve_api(dry_run=False)
    existing = api.get(args.name, args.namespace)
    if existing is None:
        raise LifecycleError(f"InferenceService {args.namespace}/{args.name} does not exist")
    if args.action == "status":
        print("\n".join(deploy.describe(existing)))
        print(f"# kubectl equivalent:\n{deploy.status_kubectl(args.name, args.namespace)}")
        return 0
    if args.action == "set-traffic":
        if args.percent is None:
            raise LifecycleError("set-traffic needs a percentage, e.g. `rollout set-traffic 50`")
        requests = deploy.plan_set_traffic(args.name, args.namespace, args.percent)
    elif args.action == "promote":
        requests = deploy.plan_promote(args.name, args.namespace, existing)
    else:
        requests = deploy.plan_rollback(args.name, args.namespace, existing)
    _carry_out(api, requests, args.dry_run)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from kfp_lifecycle import submit

    params = submit.parse_params(args.param)
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


class _FamiliesHelp:
    """The --families help, formatted only when help is shown: the family list lives in the
    train step, which imports kfp, and `lifecycle serve` must start without kfp."""

    def __str__(self) -> str:
        from kfp_lifecycle.components.train import DEFAULT_FAMILIES, FAMILIES

        return f"default: {','.join(DEFAULT_FAMILIES)}; known: {', '.join(FAMILIES)}"


def build_parser() -> argparse.ArgumentParser:
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
    training.add_argument("--data", help="CSV or Parquet file (a path, file:// or s3:// URI)")
    training.add_argument("--target", help="column to predict")
    training.add_argument("--task", choices=["auto", "classification", "regression"])
    training.add_argument("--metric", help="primary metric (default: roc_auc or rmse)")
    training.add_argument("--output", help="output directory (default: lifecycle-output)")
    families = training.add_argument(
        "--families", help="comma-separated model families (%(families_help)s)"
    )
    families.families_help = _FamiliesHelp()  # argparse fills %(name)s from the action
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
        "--engine", choices=["pandas", "dask", "auto"], help="data stage and training engine"
    )
    training.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="run the training pipeline on the built-in dataset")
    demo.add_argument("--output", default="demo-output")
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
        help="CSV or Parquet file, or a directory or s3:// prefix: every CSV and Parquet under it",
    )
    drift.add_argument("--config", help="pipeline configuration (its monitoring.drift: section)")
    drift.add_argument("--psi", action="store_true", help="also compute the stability index")
    drift.add_argument(
        "--output",
        default="lifecycle-output",
        help="directory for drift-report.html and drift-verdict.json (default: %(default)s)",
    )
    drift.set_defaults(handler=cmd_drift)

    compile_ = commands.add_parser("compile", help="compile the pipelines to KFP IR YAML")
    compile_.add_argument("--output-dir", default=str(COMPILED_DIR))
    compile_.set_defaults(handler=cmd_compile)

    serve = commands.add_parser("serve", help="serve a model bundle with KServe's model server")
    serve.add_argument(
        "--model",
        required=True,
        help="bundle directory (a registry version), or REGISTRY/MODEL@ALIAS, e.g. "
        "demo-output/registry/churn@champion",
    )
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--name", help="served model name (default: the registered name)")
    serve.set_defaults(handler=cmd_serve)

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
    deploy.set_defaults(handler=cmd_deploy)

    rollout = commands.add_parser("rollout", help="inspect or step a canary rollout")
    rollout.add_argument("action", choices=["status", "set-traffic", "promote", "rollback"])
    rollout.add_argument("percent", nargs="?", type=int, help="for set-traffic")
    rollout.add_argument("--name", required=True)
    rollout.add_argument("--namespace", default="kfp-lifecycle")
    rollout.add_argument("--dry-run", action="store_true", help="print the patch, change nothing")
    rollout.set_defaults(handler=cmd_rollout)

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
    registry.add_argument("action", choices=["list", "show", "promote", "rollback"])
    registry.add_argument("--registry", required=True, help="a directory, file:// or s3:// URI")
    registry.add_argument("--model", required=True, help="registered model name")
    registry.add_argument("--version", type=int, help="version (show: default champion)")
    registry.add_argument(
        "--override-reason",
        default="",
        help="promote a version the gate did not bless, accepting the risk (recorded reason)",
    )
    registry.set_defaults(handler=cmd_registry)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
