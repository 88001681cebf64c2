"""Rollout strategies on top of deploy's plans: blue-green, dark launch, fixed-weight variants.

Every strategy keeps the same rules. Only a version the gate blessed goes out unless a
reason overrides it (`kfp_lifecycle.registry.require_blessed`, the one check every entry
point calls). One rollout
at a time per service (`deploy.refuse_busy`). `--dry-run` prints each manifest or patch as
YAML with the kubectl command that does the same as `#` comments (`render`), so the output
is still valid YAML. And nothing is left half-way: once a first request changed the
service, any later failure rolls it back before the error is raised (`apply_all`).

| strategy   | Knative mode                               | Standard mode (spec.canary)           |
| canary     | canaryTrafficPercent N                     | one variant at N%                     |
| blue-green | new revision at 0%, then 100% in one patch | variant at 0%, then 100% in one patch |
| dark       | -                                          | variant at 0% (reachable by its URL)  |
| A/B        | one challenger at a fixed share            | several variants at fixed shares      |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import yaml

from kfp_lifecycle import deploy
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.deploy import KServeApi, Request, ServiceSpec

logger = logging.getLogger(__name__)

CANARY, BLUE_GREEN, DARK, ABTEST = "canary", "bluegreen", "dark", "abtest"


def render(requests: list[Request]) -> str:
    """A dry run as valid YAML that `kubectl apply -f -` accepts: a manifest to create is a
    document; a merge patch (not a manifest kubectl could apply) is its `kubectl patch`
    command, body included, as comments, like every note."""
    parts = []
    for request in requests:
        lines = [f"# {request.note}"] if request.note else []
        if request.verb == "create":
            lines.append(
                f"# apply it: pipe this output to `kubectl -n {request.namespace} apply -f -`"
            )
            parts.append(
                "---\n" + "\n".join(lines) + "\n" + yaml.safe_dump(request.body, sort_keys=False)
            )
        else:
            lines.append(f"# {request.verb} {request.namespace}/{request.name}:")
            lines += [f"# {line}" for line in request.kubectl().splitlines()]
            parts.append("\n".join(lines) + "\n")
    return "".join(parts)


def apply_all(api: KServeApi, requests: list[Request], log: Callable[[str], None]) -> None:
    """Send the requests in order; once one changed the service, a failure rolls it back."""
    for index, request in enumerate(requests):
        log(request.note or f"{request.verb} {request.namespace}/{request.name}")
        try:
            api.apply(request)
        except Exception as error:
            if index == 0 or request.verb == "create":
                raise
            problem = f"{request.note or request.verb} failed: {error}"
            raise deploy.roll_back_because(api, request.name, request.namespace, problem) from None


def live_service(api: KServeApi | None, name: str, namespace: str) -> dict[str, Any]:
    service = api.get(name, namespace) if api else None
    if service is None:
        raise LifecycleError(
            f"{namespace}/{name} does not exist: deploy a first version with `lifecycle deploy`"
        )
    return service


def plan_dark_launch(spec: ServiceSpec, existing: dict[str, Any]) -> list[Request]:
    """A Standard-mode variant at 0%: running, reachable at its own Service, sent no traffic."""
    if deploy.mode_of(existing) != deploy.STANDARD:
        raise LifecycleError(
            f"{spec.name} runs in Knative mode: a dark launch needs Standard mode's spec.canary "
            "(in Knative mode, `rollout bluegreen` brings a new revision up at 0% instead)"
        )
    return deploy.plan_variants(spec, existing, {spec.storage_uri: 0}, DARK)


def plan_blue_green(spec: ServiceSpec, existing: dict[str, Any]) -> list[Request]:
    """Green beside blue at 0%: a Standard variant, or in Knative a new revision at 0%."""
    deploy.refuse_busy(existing, "a blue-green switch")
    if deploy.mode_of(existing) == deploy.STANDARD:
        return deploy.plan_variants(spec, existing, {spec.storage_uri: 0}, BLUE_GREEN)
    blue = deploy.storage_uri_of(existing)
    if blue == spec.storage_uri:
        raise LifecycleError(f"{spec.namespace}/{spec.name} already serves {blue}")
    body = {
        "metadata": {
            "annotations": {
                deploy.PREVIOUS_STORAGE_URI: blue,
                deploy.MODEL_VERSION_ANNOTATION: spec.storage_uri,
                deploy.STRATEGY_ANNOTATION: BLUE_GREEN,
            }
        },
        "spec": {
            "predictor": {"canaryTrafficPercent": 0, "model": {"storageUri": spec.storage_uri}}
        },
    }
    note = f"blue-green: {spec.storage_uri} comes up at 0% beside {blue} (100%)"
    body = deploy.guarded(body, existing)
    return [Request("patch", spec.name, spec.namespace, body, deploy.MERGE, note)]


def plan_switch(name: str, namespace: str, service: dict[str, Any]) -> list[Request]:
    """All traffic to green in one patch; blue keeps running at 0% until promote confirms."""
    (request,) = deploy.plan_set_traffic(name, namespace, 100, service)
    note = "blue-green: switch 100% to green in one patch (blue stays up: `rollout rollback`)"
    return [Request(request.verb, name, namespace, request.body, request.patch_type, note)]


def green_url(service: dict[str, Any], green_uri: str) -> str:
    """Where a request reaches green alone, before it has traffic.

    Standard: the variant's own Service, <service>-<variant>-predictor. Knative: the
    revision tagged `latest` (tag routing is on for every service this project writes).
    """
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    if deploy.mode_of(service) == deploy.STANDARD:
        variant = deploy.variant_name(green_uri)
        return f"http://{name}-{variant}-predictor.{namespace}.svc.cluster.local"
    routes = service.get("status", {}).get("components", {}).get("predictor", {}).get("traffic")
    for route in routes or []:
        if route.get("tag") == "latest" and route.get("url"):
            return route["url"]
    raise LifecycleError(f"{namespace}/{name} reports no URL for its latest revision")


def smoke_request(
    url: str, model: str, body: dict[str, Any], version: str, timeout: float = 30.0
) -> dict[str, Any]:
    """One V1 prediction; it must answer every instance and come from the expected version."""
    import httpx

    try:
        response = httpx.post(f"{url}/v1/models/{model}:predict", json=body, timeout=timeout)
        response.raise_for_status()
        answer = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise LifecycleError(f"smoke request to {url} failed: {error}") from None
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(body.get("instances", [])):
        raise LifecycleError(f"smoke request to {url}: no prediction per instance in {answer}")
    if str(answer.get("model_version")) != version:
        raise LifecycleError(
            f"smoke request to {url} was answered by version {answer.get('model_version')}, "
            f"not {version}"
        )
    return answer


def run_blue_green(
    api: KServeApi,
    spec: ServiceSpec,
    smoke: Callable[[dict[str, Any]], Any],
    timeout_seconds: float = 900,
    poll_seconds: float = 5.0,
    clock: Any = None,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Green at 0%, ready, smoke-tested, then 100% in one patch; any failure rolls back.

    `smoke(service)` sends the smoke request (e.g. `smoke_request` to `green_url`) and
    raises when it fails. Blue keeps running: `rollout promote` confirms, `rollout
    rollback` sends everything back to it at once.
    """
    existing = live_service(api, spec.name, spec.namespace)
    apply_all(api, plan_blue_green(spec, existing), log)
    try:
        service = deploy.wait_until_ready(
            api, spec.name, spec.namespace, timeout_seconds, poll_seconds, clock
        )
        smoke(service)
        apply_all(api, plan_switch(spec.name, spec.namespace, service), log)
    except Exception as error:
        cause = str(error) if isinstance(error, LifecycleError) else repr(error)
        problem = f"blue-green of {spec.storage_uri} stopped before the switch: {cause}"
        raise deploy.roll_back_because(api, spec.name, spec.namespace, problem) from error
    return api.get(spec.name, spec.namespace) or {}


def plan_fixed_shares(
    spec: ServiceSpec, existing: dict[str, Any], shares: dict[str, int], strategy: str
) -> list[Request]:
    """Challengers at fixed shares beside the stable model (an A/B test's split).

    Standard mode takes any number of variants; Knative mode has one canary revision, so
    one challenger.
    """
    deploy.refuse_busy(existing, f"starting a {strategy}")
    if deploy.mode_of(existing) == deploy.STANDARD:
        return deploy.plan_variants(spec, existing, shares, strategy)
    if len(shares) != 1:
        raise LifecycleError(
            f"Knative mode splits traffic between two revisions: one challenger, got "
            f"{len(shares)} (Standard mode takes several)"
        )
    ((uri, percent),) = shares.items()
    one = ServiceSpec(**{**spec.__dict__, "storage_uri": uri, "canary_percent": percent})
    (request,) = deploy.plan_deploy(one, existing)
    request.body["metadata"]["annotations"][deploy.STRATEGY_ANNOTATION] = strategy
    return [request]
