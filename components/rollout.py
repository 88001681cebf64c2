"""Rollout: step the canary's traffic, analyse it against the stable revision, decide."""

import json

from kfp.dsl import Artifact, Output

from kfp_lifecycle.component import component


@component
def rollout(
    service_name: str,
    model_name: str,
    canary_version: str,
    stable_version: str,
    decision: Output[Artifact],
    namespace: str = "kfp-lifecycle",
    options: dict = {},  # noqa: B006 (KFP default, never mutated)
) -> str:
    """Step the canary (e.g. 10% -> 50% -> 100%), analysing each step in Prometheus.

    Works in both KServe modes. A failed analysis rolls back (Knative: canary to 0, previous
    storageUri re-applied; Standard: the spec.canary variant removed); passing the last step
    promotes (Knative: the canary field removed; Standard: the stable predictor renamed to
    the variant). An error on the way (Prometheus unreachable, an API failure) rolls back
    too, then fails the step.

    Args:
        service_name: InferenceService name.
        model_name: Model name as the runtime labels its metrics (the service's name).
        canary_version: Registry version under test.
        stable_version: Registry version serving the rest of the traffic.
        decision: JSON: the outcome and every analysis with its reasons.
        namespace: Namespace of the InferenceService.
        options: CanaryOptions (kfp_lifecycle/canary.py): steps, interval_seconds, window,
            min_requests, error-rate and latency limits, max_prediction_shift (optional
            prediction distribution shift), prometheus_url.

    Returns:
        promoted or rolled back.
    """
    from kfp_lifecycle.canary import CanaryOptions, analyse, run_rollout
    from kfp_lifecycle.deploy import KServeApi

    settings = CanaryOptions.model_validate(options)
    result = run_rollout(
        KServeApi(),
        service_name,
        namespace,
        settings,
        lambda: analyse(settings, model_name, canary_version, stable_version),
    )
    with open(decision.path, "w") as handle:
        json.dump(
            {"outcome": result.outcome, "analyses": [v.to_dict() for v in result.verdicts]},
            handle,
            indent=2,
        )
    decision.metadata["outcome"] = result.outcome
    return result.outcome
