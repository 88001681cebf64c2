import numpy as np
import pandas as pd
import pytest

from kfp_lifecycle.components.validate import validate_table
from kfp_lifecycle.core.errors import DataError
from kfp_lifecycle.core.tasks import CLASSIFICATION, REGRESSION


def test_task_and_metric_detected_from_the_target(churn, multiclass, regression):
    assert validate_table(churn, "churned").task == CLASSIFICATION
    assert validate_table(multiclass, "species").primary_metric == "roc_auc"
    result = validate_table(regression, "price")
    assert (result.task, result.primary_metric) == (REGRESSION, "rmse")


def test_few_valued_integer_target_is_classification_unless_overridden():
    frame = pd.DataFrame({"x": range(60), "y": [0, 1, 2] * 20})
    assert validate_table(frame, "y").task == CLASSIFICATION
    assert validate_table(frame, "y", task="regression").task == REGRESSION


def test_missing_target_names_the_columns(churn):
    with pytest.raises(
        DataError, match="target column 'churn' not found; columns are: signup_date"
    ):
        validate_table(churn, "churn")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"x": [1, 2, 3], "y": [1, 1, 1]}), "constant"),
        (pd.DataFrame({"x": [1, 2, 3], "empty": [np.nan] * 3, "y": [0, 1, 0]}), "entirely null"),
        (pd.DataFrame({"y": [0, 1]}), "no features"),
        (pd.DataFrame({"x": range(9), "y": list("aaaaabbbc")}), r"fewer than 3 rows: 'c' \(1\)"),
        (pd.DataFrame({"x": [], "y": []}), "no rows"),
    ],
)
def test_unusable_tables_are_refused(frame, message):
    with pytest.raises(DataError, match=message):
        validate_table(frame, "y")


def test_metric_must_fit_the_task(regression):
    with pytest.raises(DataError, match="metric 'roc_auc' does not apply to regression"):
        validate_table(regression, "price", metric="roc_auc")
    with pytest.raises(DataError, match="needs a numeric target"):
        validate_table(pd.DataFrame({"x": range(6), "y": list("ababab")}), "y", task="regression")


def test_missing_labels_are_a_warning_not_an_error(churn):
    frame = churn.copy()
    frame.loc[:4, "churned"] = None
    result = validate_table(frame, "churned")
    assert "target 'churned' is missing in 5 row(s); they are left out of training" in (
        result.warnings
    )


def test_a_continuous_target_forced_to_classification_names_few_classes_and_hints():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": range(300), "price": rng.uniform(10, 90, size=300).round(2)})
    with pytest.raises(DataError) as raised:
        validate_table(frame, "price", task="classification")
    message = str(raised.value)
    rare = frame["price"].value_counts()
    rare = rare[rare < 3]
    assert message.startswith(f"{len(rare)} class(es) of 'price' with fewer than 3 rows: ")
    listed = message.split(" rows: ", 1)[1].split(";")[0]
    assert listed.endswith(f" and {len(rare) - 5} more") and listed.count("(") == 5
    assert "np.float64" not in message
    assert message.endswith(
        f"'price' looks numeric and continuous ({frame['price'].nunique()} distinct values): "
        "use --task regression"
    )
