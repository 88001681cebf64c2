"""Submit the compiled pipelines to a Kubeflow Pipelines cluster, once or on a schedule."""

from __future__ import annotations

import json
from typing import Any

from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.pipelines import COMPILED_DIR, pipelines

RUN_TIMEOUT_SECONDS = 3 * 60 * 60
# Pipeline parameters renamed so that each is named after its step (issue 12.7): old -> new.
RENAMED_PARAMETERS = {
    "threshold_options": "calibrate_options",
    "tuning_options": "tune_options",
    "rule": "retrain_options",
    "canary_options": "rollout_options",
}


def parse_params(pairs: list[str] | None) -> dict[str, Any]:
    """`k=v` pairs; a value that reads as JSON (number, list, object) is passed as such."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise LifecycleError(f"--param expects NAME=VALUE, got '{pair}'")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def package_path(pipeline: str) -> str:
    if pipeline not in pipelines():
        known = ", ".join(pipelines())
        raise LifecycleError(f"unknown pipeline '{pipeline}'; choose from: {known}")
    return str(COMPILED_DIR / f"{pipeline}.yaml")


def check_params(pipeline: str, params: dict[str, Any]) -> None:
    """Refuse a parameter the compiled pipeline does not take, before anything is sent."""
    import yaml

    with open(package_path(pipeline)) as handle:
        spec = next(yaml.safe_load_all(handle))
    known = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(params) - set(known))
    renamed = [
        f"{old} is now {RENAMED_PARAMETERS[old]}" for old in unknown if old in RENAMED_PARAMETERS
    ]
    if unknown:
        raise LifecycleError(
            f"the {pipeline} pipeline has no parameter(s) {', '.join(unknown)}"
            + (f" ({'; '.join(renamed)})" if renamed else "")
            + f"; it takes: {', '.join(sorted(known))}"
        )


def check_cron(cron: str) -> None:
    """KFP's cron has six fields, seconds first."""
    if len(cron.split()) != 6:
        raise LifecycleError(
            f"--cron '{cron}' needs six fields (seconds first), e.g. '0 0 3 * * *' for 03:00 daily"
        )


def client(host: str, namespace: str | None) -> Any:
    """A connected kfp.Client; an unreachable or unhealthy API is one line, not a traceback."""
    import logging
    import warnings

    import kfp

    # kfp.Client's version notice and urllib3's retry warnings say nothing the error won't.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return kfp.Client(host=host, namespace=namespace)
        except Exception as error:  # urllib3, kfp_server_api and auth errors alike
            reason = getattr(error, "reason", None) or error
            detail = " ".join(str(reason).split())
            raise LifecycleError(f"cannot reach the KFP API at {host}: {detail}") from None


def submit(
    kfp_client: Any,
    host: str,
    pipeline: str,
    params: dict[str, Any],
    experiment: str,
    namespace: str | None,
    wait: bool,
) -> dict[str, Any]:
    check_params(pipeline, params)
    result = kfp_client.create_run_from_pipeline_package(
        package_path(pipeline),
        arguments=params,
        experiment_name=experiment,
        namespace=namespace,
    )
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    summary = {"run_id": result.run_id, "url": url}
    if wait:
        run = kfp_client.wait_for_run_completion(result.run_id, timeout=RUN_TIMEOUT_SECONDS)
        summary["state"] = str(run.state)
        if summary["state"] != "SUCCEEDED":
            raise LifecycleError(f"run {result.run_id} ended {summary['state']}: {summary['url']}")
    return summary


def schedule(
    kfp_client: Any,
    pipeline: str,
    params: dict[str, Any],
    experiment: str,
    namespace: str | None,
    cron: str,
    name: str,
) -> str:
    """A recurring run (KFP cron: six fields, seconds first, e.g. `0 0 3 * * *`)."""
    check_cron(cron)
    check_params(pipeline, params)
    experiment_id = kfp_client.create_experiment(experiment, namespace=namespace).experiment_id
    recurring = kfp_client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=name,
        cron_expression=cron,
        pipeline_package_path=package_path(pipeline),
        params=params,
        no_catchup=True,
    )
    return recurring.recurring_run_id
