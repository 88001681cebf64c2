"""`lifecycle rollout|abtest|shadow`: what each command does; cli.py only parses.

Logic lives in deploy (requests per mode), rollout (strategies), abtest (verdicts) and
shadow (replay); here the parsed flags become those calls, and what a person sees is
printed. A dry run prints valid YAML: `#` comments and one document per request.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kfp_lifecycle import deploy, rollout
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.deploy import KServeApi, Request, ServiceSpec

EXIT_REFUSED = 3  # the shadow gate refused the candidate


def kserve_api(dry_run: bool) -> KServeApi | None:
    try:
        return KServeApi()
    except Exception as error:  # no kubeconfig, no in-cluster config
        if dry_run:
            print(f"# no cluster reachable ({type(error).__name__}); showing a first deploy")
            return None
        raise LifecycleError(f"no Kubernetes cluster reachable: {error}") from None


def carry_out(api: KServeApi | None, requests: list[Request], dry_run: bool) -> None:
    """Dry run: the YAML. Else each request's kubectl (as comments), then all or nothing."""
    if dry_run:
        print(rollout.render(requests), end="")
        return
    for request in requests:
        print(f"# kubectl equivalent:\n# {request.kubectl().replace(chr(10), chr(10) + '# ')}")
    rollout.apply_all(api, requests, lambda note: print(f"# {note}"))


def service_spec(args: argparse.Namespace, uri: str, mode: str, percent: int | None = None):
    return ServiceSpec(
        name=args.name,
        storage_uri=uri,
        namespace=args.namespace,
        service_account=getattr(args, "service_account", "kfp-lifecycle-serving"),
        canary_percent=percent,
        deployment_mode=mode,
        min_replicas=1 if getattr(args, "min_replicas", None) is None else args.min_replicas,
    )


def mode_for(api: KServeApi | None, requested: str | None, existing: dict[str, Any] | None) -> str:
    """--mode, else the live service's, else KServe's cluster default, else Knative."""
    cluster = api.cluster_default_mode() if api and existing is None and not requested else None
    return deploy.choose_mode(requested, existing, cluster)


def blessed_uri(reference: str, override_reason: str) -> str:
    """A registry version on S3 that the gate blessed (or a reason overrides)."""
    from kfp_lifecycle.registry import bundle_metadata, require_blessed, resolve_reference

    uri = resolve_reference(reference)
    if not uri.startswith("s3://"):
        raise LifecycleError(
            f"{uri} is not on S3: a cluster loads models from a registry on S3 (s3://...); "
            "serve a local bundle with `lifecycle serve`"
        )
    require_blessed(bundle_metadata(uri), uri, "deploy", override_reason)
    return uri


def cmd_rollout(args: argparse.Namespace) -> int:
    """status, set-traffic, promote, rollback (both modes), bluegreen and dark."""
    api = kserve_api(dry_run=False)
    existing = rollout.live_service(api, args.name, args.namespace)
    name, namespace = args.name, args.namespace
    if args.action == "status":
        print("\n".join(deploy.describe(existing)))
        print(f"# kubectl equivalent:\n{deploy.status_kubectl(name, namespace)}")
        return 0
    if args.action in ("bluegreen", "dark"):
        if not args.model:
            raise LifecycleError(f"rollout {args.action} needs --model REGISTRY/MODEL@ALIAS")
        deploy.refuse_busy(existing, f"a {args.action} rollout")
        uri = blessed_uri(args.model, args.override_reason)
        spec = service_spec(args, uri, deploy.mode_of(existing))
        if args.action == "dark":
            carry_out(api, rollout.plan_dark_launch(spec, existing), args.dry_run)
            return 0
        if args.dry_run:
            plan = rollout.plan_blue_green(spec, existing)
            carry_out(api, plan, dry_run=True)
            print("# then, once green is ready and answers the smoke request:")
            carry_out(api, rollout.plan_switch(name, namespace, _after(existing, plan)), True)
            return 0
        return _blue_green(api, spec, args)
    if args.action == "set-traffic":
        if args.percent is None:
            raise LifecycleError("set-traffic needs a percentage, e.g. `rollout set-traffic 50`")
        requests = deploy.plan_set_traffic(name, namespace, args.percent, existing, args.variant)
    elif args.action == "promote":
        requests = deploy.plan_promote(name, namespace, existing, args.variant)
    else:
        requests = deploy.plan_rollback(name, namespace, existing)
    carry_out(api, requests, args.dry_run)
    return 0


def _after(service: dict[str, Any], requests: list[Request]) -> dict[str, Any]:
    """The object once the merge patches applied (RFC 7386), to plan the next step."""

    def merge(target: Any, patch: Any) -> Any:
        if not isinstance(patch, dict):
            return patch
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = merge(result.get(key), value)
        return result

    for request in requests:
        service = merge(service, request.body)
    return service


def _blue_green(api: KServeApi, spec: ServiceSpec, args: argparse.Namespace) -> int:
    from kfp_lifecycle.registry import bundle_metadata, model_version_of

    if not args.smoke:
        raise LifecycleError('rollout bluegreen needs --smoke FILE: a V1 body {"instances": [...]}')
    try:
        body = json.loads(Path(args.smoke).read_text())
    except (OSError, ValueError) as error:
        raise LifecycleError(f"--smoke {args.smoke}: not a readable JSON body ({error})") from None
    version = model_version_of(bundle_metadata(spec.storage_uri))
    model = args.model_name or spec.name

    def smoke(service: dict[str, Any]) -> None:
        url = rollout.green_url(service, spec.storage_uri)
        rollout.smoke_request(url, model, body, version)
        print(f"# smoke request to {url}: answered by version {version}")

    rollout.run_blue_green(api, spec, smoke, args.timeout, log=lambda m: print(f"# {m}"))
    print(
        f"# {spec.storage_uri} serves 100%; the old version stays up at 0% until "
        f"`lifecycle rollout promote --name {spec.name}` (or `rollback` to switch back)"
    )
    return 0


def _window(args: argparse.Namespace) -> tuple[str, str]:
    from datetime import UTC, datetime

    today = datetime.now(UTC).date().isoformat()
    return args.start or today, args.end or today


def _validated(model: Any, source: str, **values: Any) -> Any:
    """A pydantic options model from flags; a bad value is a LifecycleError naming it."""
    from pydantic import ValidationError

    from kfp_lifecycle.config import describe_errors

    try:
        return model(**values)
    except ValidationError as error:
        raise LifecycleError(describe_errors(error, source)) from None


def _needs(args: argparse.Namespace, command: str, *flags: str) -> None:
    missing = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f) in (None, [], "")]
    if missing:
        raise LifecycleError(f"{command} needs {', '.join(missing)}")


def cmd_abtest(args: argparse.Namespace) -> int:
    """start: challengers at fixed shares, the plan stored on the service; status: the
    verdict from the log and labels; conclude: act on it through rollout promote/rollback."""
    from kfp_lifecycle import abtest
    from kfp_lifecycle.registry import bundle_metadata, model_version_of

    dry_run = getattr(args, "dry_run", False)
    api = kserve_api(dry_run=False)
    existing = rollout.live_service(api, args.name, args.namespace)
    if args.action == "start":
        _needs(args, "abtest start", "model", "baseline", "min_effect")
        control_uri = deploy.stable_storage_uri(existing)
        uris = [blessed_uri(reference, args.override_reason) for reference in args.model]
        shares = args.share or [100 // (len(uris) + 1)] * len(uris)
        if len(shares) != len(uris):
            raise LifecycleError(f"{len(uris)} --model but {len(shares)} --share: one share each")
        plan = _validated(
            abtest.AbTestPlan,
            "abtest start",
            metric=args.metric,
            baseline=args.baseline,
            min_effect=args.min_effect,
            alpha=args.alpha,
            power=args.power,
            positive_rate=args.positive_rate,
            positive_label=args.positive_label,
            control=model_version_of(bundle_metadata(control_uri)),
            challengers={
                model_version_of(bundle_metadata(uri)): deploy.variant_name(uri) for uri in uris
            },
        )
        spec = service_spec(args, control_uri, deploy.mode_of(existing))
        requests = rollout.plan_fixed_shares(
            spec, existing, dict(zip(uris, shares, strict=True)), rollout.ABTEST
        )
        annotations = requests[0].body.setdefault("metadata", {}).setdefault("annotations", {})
        annotations[abtest.PLAN_ANNOTATION] = plan.to_annotation()
        print(
            f"# A/B test on {plan.metric}: {plan.rows_per_arm} labelled rows per arm are needed to "
            f"detect {plan.min_effect:g} at alpha {plan.alpha:g} with power {plan.power:g}; "
            "judged once every arm has them"
        )
        carry_out(api, requests, dry_run)
        return 0
    from kfp_lifecycle.components.ingest import read_table
    from kfp_lifecycle.serving.payload_log import read_payload_log

    _needs(args, f"abtest {args.action}", "log", "labels")
    plan = abtest.AbTestPlan.from_service(existing)
    start, end = _window(args)
    log = read_payload_log(args.log, args.log_model or args.name, start, end)
    verdict = abtest.evaluate(log, read_table(args.labels), args.label_column, plan, args.seed)
    print(f"{verdict.decision}" + (f": {verdict.winner}" if verdict.winner else ""))
    print("\n".join(verdict.reasons))
    if args.report:
        Path(args.report).write_text(abtest.report_html(plan, verdict, args.name))
        print(f"# report: {args.report}")
    if args.action == "status":
        return 0
    if verdict.decision == abtest.CONTINUE:
        raise LifecycleError("the A/B test has no verdict yet: " + verdict.reasons[0])
    if verdict.decision == abtest.WINNER and verdict.winner != plan.control:
        variant = plan.challengers[verdict.winner]
        requests = deploy.plan_promote(args.name, args.namespace, existing, variant)
    else:  # the control won, or no difference: the challengers go
        requests = deploy.plan_rollback(args.name, args.namespace, existing)
    carry_out(api, requests, dry_run)
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    """Replay a logged window through the candidate; exit 3 when the gate refuses it."""
    import tempfile

    from kfp_lifecycle import shadow
    from kfp_lifecycle.registry import load_version, model_version_of, resolve_reference
    from kfp_lifecycle.serving.payload_log import read_payload_log

    options = _validated(
        shadow.ShadowOptions,
        "shadow",
        min_rows=args.min_rows,
        min_agreement=args.min_agreement,
        max_shift=args.max_shift,
        max_latency_ratio=args.max_latency_ratio,
    )
    start, end = _window(args)
    with tempfile.TemporaryDirectory() as work:
        candidate = load_version(resolve_reference(args.model), Path(work) / "candidate")
        champion = None
        if args.champion:
            champion = load_version(resolve_reference(args.champion), Path(work) / "champion")
        version = args.version or (model_version_of(champion.metadata) if champion else None)
        log = read_payload_log(args.log, args.log_model, start, end)
        report = shadow.shadow_replay(log, candidate, options, champion, version)
    print(("passed" if report.passed else "refused") + f": {report.rows} logged rows replayed")
    print("\n".join(report.reasons))
    if args.output:
        Path(args.output).write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.passed else EXIT_REFUSED


def add_parsers(commands: Any, deploy_parser: Any, *handlers: Any) -> None:
    """The flags of `deploy` for modes, and the `rollout`, `abtest` and `shadow` commands."""
    cmd_deploy, cmd_rollout_, cmd_abtest_, cmd_shadow_ = handlers
    modes = list(deploy.MODES)
    mode_help = "KServe mode of a new service (default: the cluster's defaultDeploymentMode)"
    deploy_parser.add_argument("--mode", choices=modes, help=mode_help)
    deploy_parser.add_argument(
        "--min-replicas",
        type=int,
        help="replicas kept running (default 1); 0 scales to zero when idle (Knative mode only)",
    )
    deploy_parser.set_defaults(handler=cmd_deploy)

    def service(parser: Any) -> None:
        parser.add_argument("--name", required=True, help="InferenceService name")
        parser.add_argument("--namespace", default="kfp-lifecycle")

    def writes(parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print YAML, change nothing")
        parser.add_argument(
            "--override-reason", default="", help="roll out a version the gate refused"
        )
        parser.add_argument("--service-account", default="kfp-lifecycle-serving")

    rollout_parser = commands.add_parser(
        "rollout", help="inspect or step a rollout: canary, blue-green, dark launch (both modes)"
    )
    rollout_parser.add_argument(
        "action",
        choices=["status", "set-traffic", "promote", "rollback", "bluegreen", "dark"],
        help="bluegreen: new version at 0%%, ready + smoke request, then 100%% in one patch; "
        "dark: a Standard-mode variant at 0%%",
    )
    rollout_parser.add_argument("percent", nargs="?", type=int, help="for set-traffic")
    service(rollout_parser)
    writes(rollout_parser)
    rollout_parser.add_argument("--model", help="bluegreen/dark: REGISTRY/MODEL@ALIAS or s3:// URI")
    rollout_parser.add_argument("--variant", help="Standard mode: which variant (several live)")
    rollout_parser.add_argument(
        "--smoke", help='bluegreen: JSON file, a V1 body {"instances": [...]}'
    )
    rollout_parser.add_argument("--model-name", help="bluegreen: name in the URL (default --name)")
    rollout_parser.add_argument(
        "--timeout", type=float, default=900, help="bluegreen: ready wait, s"
    )
    rollout_parser.set_defaults(handler=cmd_rollout_)

    ab = commands.add_parser("abtest", help="A/B test: fixed shares, a planned size, a verdict")
    ab.add_argument("action", choices=["start", "status", "conclude"])
    service(ab)
    writes(ab)
    ab.add_argument("--model", action="append", default=[], help="start: a challenger (repeatable)")
    ab.add_argument("--share", action="append", type=int, help="start: its traffic %% (repeatable)")
    ab.add_argument("--metric", default="accuracy", choices=["accuracy", "roc_auc", "rmse"])
    ab.add_argument("--baseline", type=float, help="start: the control's expected metric")
    ab.add_argument("--min-effect", type=float, help="start: smallest difference worth detecting")
    ab.add_argument("--alpha", type=float, default=0.05)
    ab.add_argument("--power", type=float, default=0.8)
    ab.add_argument("--positive-rate", type=float, default=0.5, help="roc_auc: positive share")
    ab.add_argument("--positive-label", default="", help="roc_auc: the positive class")
    ab.add_argument("--log", help="status/conclude: request log (directory or s3:// prefix)")
    ab.add_argument("--log-model", help="model name in the log (default --name)")
    ab.add_argument("--labels", help="status/conclude: labels table (request_id[, row], label)")
    ab.add_argument("--label-column", default="label")
    ab.add_argument("--start", help="first day of the log, YYYY-MM-DD (default today)")
    ab.add_argument("--end", help="last day, YYYY-MM-DD (default today)")
    ab.add_argument("--report", help="write the HTML report here")
    ab.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ab.set_defaults(handler=cmd_abtest_)

    shadow_parser = commands.add_parser(
        "shadow", help="replay logged requests through a candidate offline; exit 3 if refused"
    )
    shadow_parser.add_argument("--model", required=True, help="candidate: REGISTRY/MODEL@ALIAS")
    shadow_parser.add_argument("--champion", help="the served model, for latency and a check")
    shadow_parser.add_argument("--log", required=True, help="request log: directory or s3://")
    shadow_parser.add_argument("--log-model", required=True, help="model name in the log")
    shadow_parser.add_argument("--version", help="replay only rows this version answered")
    shadow_parser.add_argument("--start", help="first day, YYYY-MM-DD (default today)")
    shadow_parser.add_argument("--end", help="last day, YYYY-MM-DD (default today)")
    shadow_parser.add_argument("--min-rows", type=int, default=100)
    shadow_parser.add_argument("--min-agreement", type=float, default=0.9)
    shadow_parser.add_argument("--max-shift", type=float, default=0.1)
    shadow_parser.add_argument("--max-latency-ratio", type=float)
    shadow_parser.add_argument("--output", help="write the report as JSON here")
    shadow_parser.set_defaults(handler=cmd_shadow_)
