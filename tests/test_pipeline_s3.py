"""The training pipeline with its data and its registry on S3 (moto's server on localhost)."""

import pytest
from s3_server import new_bucket, running_moto

from kfp_lifecycle.components.ingest import read_table
from kfp_lifecycle.config import parse_config
from kfp_lifecycle.core.bundle import load_bundle
from kfp_lifecycle.core.errors import LifecycleError
from kfp_lifecycle.local_run import run_training
from kfp_lifecycle.registry import CHAMPION, open_registry
from kfp_lifecycle.registry import download_version as download_bundle
from kfp_lifecycle.serving.server import resolve_model
from kfp_lifecycle.storage import upload_file

pytestmark = pytest.mark.pipeline


def test_training_reads_and_registers_on_s3(tmp_path, monkeypatch, churn):
    with running_moto() as moto:
        for name, value in moto.env().items():
            monkeypatch.setenv(name, value)  # kfp.local's step processes inherit them
        client = moto.client()
        data_bucket, model_bucket = new_bucket(client), new_bucket(client)
        churn.to_csv(tmp_path / "churn.csv", index=False)
        upload_file(client, tmp_path / "churn.csv", data_bucket, "tables/churn.csv")
        registry = f"s3://{model_bucket}/registry"

        summary = run_training(
            parse_config(
                {
                    "data": {"source": f"s3://{data_bucket}/tables/churn.csv", "target": "churned"},
                    "output": str(tmp_path / "out"),
                    "registry": registry,
                    "models": {"families": ["linear"]},
                    "gate": {"primary_threshold": 0.6},
                }
            )
        )

        assert summary["model_uri"] == f"{registry}/churned/versions/1/"
        assert summary["blessed"] is True
        metadata = download_bundle(summary["model_uri"], tmp_path / "bundle", client)
        assert metadata["lineage"]["data_source"] == f"s3://{data_bucket}/tables/churn.csv"
        assert len(metadata["lineage"]["data_sha256"]) == 64
        assert open_registry(registry).alias("churned", CHAMPION).version == 1
        served = load_bundle(resolve_model(f"{registry}/churned@champion"))
        assert served.metadata["sha256"] == metadata["sha256"]


def test_missing_s3_source_is_a_one_line_error(monkeypatch):
    with running_moto() as moto:
        for name, value in moto.env().items():
            monkeypatch.setenv(name, value)
        bucket = new_bucket(moto.client())
        with pytest.raises(LifecycleError, match=f"s3://{bucket}/nope.csv"):
            read_table(f"s3://{bucket}/nope.csv")
