"""The training pipeline with a Dask cluster for the run: created first, deleted however it ends.

The default `training` pipeline is left as it is (no cluster step, no exit handler); this
variant wraps the same pipeline, as a nested pipeline, in an exit handler whose exit step
deletes the run's DaskCluster, so a failed training leaves no cluster running. The cluster
step's output (the scheduler address) is the nested pipeline's `dask_scheduler`, so every
Dask step of the run connects to that cluster; `engine` defaults to dask here (pandas or
auto would leave the cluster idle for some or all steps).
"""

from kfp import dsl

from kfp_lifecycle.budget import DEFAULT_TIME_BUDGET
from kfp_lifecycle.components.dask_cluster import create_dask_cluster, delete_dask_cluster
from kfp_lifecycle.dask_cluster import EPHEMERAL
from kfp_lifecycle.families import DEFAULT_FAMILIES
from kfp_lifecycle.pipelines.training import training_pipeline

PIPELINE_NAME = "training-dask"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="The training pipeline with the Dask engine on a Dask cluster: an ephemeral "
    "DaskCluster for the run (Dask Kubernetes Operator), deleted in an exit handler even when "
    "training fails, or a given scheduler address; every Dask step connects to it.",
)
def training_dask_pipeline(
    data: str,
    target: str,
    registry: str,
    model_name: str,
    task: str = "auto",
    metric: str = "auto",
    families: list = DEFAULT_FAMILIES,
    tune_options: dict = {},  # noqa: B006
    calibrate_options: dict = {},  # noqa: B006
    diagnose_options: dict = {},  # noqa: B006
    explain_options: dict = {},  # noqa: B006
    report_options: dict = {},  # noqa: B006
    gate_options: dict = {},  # noqa: B006
    profile_options: dict = {},  # noqa: B006
    clean_options: dict = {},  # noqa: B006
    split_options: dict = {},  # noqa: B006
    preprocess_options: dict = {},  # noqa: B006
    features_options: dict = {},  # noqa: B006
    balance_options: dict = {},  # noqa: B006
    sql_options: dict = {},  # noqa: B006
    positive_class: str = "",
    time_budget: float = DEFAULT_TIME_BUDGET,
    onnx_export: bool = True,
    engine: str = "dask",
    dask_options: dict = {},  # noqa: B006
    dask_cluster: str = EPHEMERAL,
    dask_namespace: str = "kfp-lifecycle",
    dask_workers: int = 2,
    dask_worker_memory: str = "4Gi",
    dask_worker_cpu: str = "1",
    dask_timeout_seconds: int = 600,
):
    # The exit step names the cluster from the run id alone: it needs nothing from the steps
    # inside the handler, which may have failed before producing anything.
    cleanup = delete_dask_cluster(
        dask_cluster=dask_cluster,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        namespace=dask_namespace,
    ).set_caching_options(False)
    with dsl.ExitHandler(cleanup, name="with-dask-cluster"):
        cluster = create_dask_cluster(
            dask_cluster=dask_cluster,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            namespace=dask_namespace,
            workers=dask_workers,
            worker_memory=dask_worker_memory,
            worker_cpu=dask_worker_cpu,
            timeout_seconds=dask_timeout_seconds,
        ).set_caching_options(False)
        # The cluster step's output is the scheduler address (empty with dask_cluster="":
        # each step then starts a LocalCluster of its own, as dask_options say).
        training_pipeline(
            data=data,
            target=target,
            registry=registry,
            model_name=model_name,
            task=task,
            metric=metric,
            families=families,
            tune_options=tune_options,
            calibrate_options=calibrate_options,
            diagnose_options=diagnose_options,
            explain_options=explain_options,
            report_options=report_options,
            gate_options=gate_options,
            profile_options=profile_options,
            clean_options=clean_options,
            split_options=split_options,
            preprocess_options=preprocess_options,
            features_options=features_options,
            balance_options=balance_options,
            sql_options=sql_options,
            positive_class=positive_class,
            time_budget=time_budget,
            onnx_export=onnx_export,
            engine=engine,
            dask_options=dask_options,
            dask_scheduler=cluster.output,
        )
