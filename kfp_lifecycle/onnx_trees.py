"""Tree ensembles as ai.onnx.ml TreeEnsemble (opset 5), thresholds and leaves in double.

sklearn's random forests and histogram gradient boosting, and LightGBM (from its booster's
dump), hold thresholds and leaf values in double; skl2onnx's and onnxmltools' tree converters
write float32 ones, and a value a float32 rounding puts on the other side of a threshold
changes the prediction. Used by kfp_lifecycle.export only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kfp_lifecycle.core.tasks import CLASSIFICATION
from kfp_lifecycle.onnx_steps import IR_VERSION, TARGET_OPSET, ExportError

TREE_ESTIMATORS = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "LGBMClassifier",
    "LGBMRegressor",
)
LEQ = 0  # TreeEnsemble node mode BRANCH_LEQ: x <= split goes to the true branch


@dataclass
class _Tree:
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray  # bool
    missing_left: np.ndarray  # bool: NaN goes left
    value: np.ndarray  # node -> leaf value (for one target)


def _forest_trees(forest: Any, target: int) -> list[_Tree]:
    trees = []
    for estimator in forest.estimators_:
        t = estimator.tree_
        values = t.value[:, 0, :]
        if hasattr(forest, "classes_"):  # a leaf's class fractions, as predict_proba gives
            values = values / values.sum(axis=1, keepdims=True)
        missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8))
        trees.append(
            _Tree(
                t.feature,
                t.threshold,
                t.children_left,
                t.children_right,
                t.children_left == -1,
                np.asarray(missing, dtype=bool),
                values[:, target],
            )
        )
    return trees


def _hgb_trees(model: Any, target: int) -> list[_Tree]:
    trees = []
    for iteration in model._predictors:
        nodes = iteration[target].nodes
        if nodes["is_categorical"].any():
            raise ExportError("cannot export a HistGradientBoosting model with categorical splits")
        trees.append(
            _Tree(
                nodes["feature_idx"],
                nodes["num_threshold"],
                nodes["left"],
                nodes["right"],
                nodes["is_leaf"].astype(bool),
                nodes["missing_go_to_left"].astype(bool),
                nodes["value"],
            )
        )
    return trees


def _tree_ensemble(nodes: Graph, x: str, per_target: list[list[_Tree]]) -> str:
    """Sum over the trees of each target, [rows, targets] double."""
    from onnx import numpy_helper

    attrs: dict[str, list] = {
        k: []
        for k in (
            "nodes_featureids", "nodes_splits", "nodes_truenodeids", "nodes_trueleafs",
            "nodes_falsenodeids", "nodes_falseleafs", "nodes_missing_value_tracks_true",
            "leaf_targetids", "leaf_weights", "tree_roots",
        )
    }  # fmt: skip
    for target, trees in enumerate(per_target):
        for tree in trees:
            _add_tree(attrs, tree, target)
    splits = np.asarray(attrs.pop("nodes_splits"), dtype=np.float64)
    weights = np.asarray(attrs.pop("leaf_weights"), dtype=np.float64)
    return nodes.op(
        "TreeEnsemble",
        x,
        op_domain="ai.onnx.ml",
        op_version=5,
        aggregate_function=1,  # SUM
        post_transform=0,
        n_targets=len(per_target),
        nodes_modes=numpy_helper.from_array(np.full(len(splits), LEQ, dtype=np.uint8)),
        nodes_splits=numpy_helper.from_array(splits),
        leaf_weights=numpy_helper.from_array(weights),
        **attrs,
    )


def _add_tree(attrs: dict[str, list], tree: _Tree, target: int) -> None:
    """Append one tree: internal nodes and leaves numbered apart, as TreeEnsemble wants."""
    node_base, leaf_base = len(attrs["nodes_featureids"]), len(attrs["leaf_weights"])
    internal = np.flatnonzero(~tree.leaf)
    leaves = np.flatnonzero(tree.leaf)
    node_index = {int(n): node_base + i for i, n in enumerate(internal)}
    leaf_index = {int(n): leaf_base + i for i, n in enumerate(leaves)}
    attrs["leaf_targetids"] += [target] * len(leaves)
    attrs["leaf_weights"] += [float(tree.value[n]) for n in leaves]
    if not len(internal):  # a lone leaf: one split whose branches both reach it
        attrs["tree_roots"].append(node_base)
        for key, value in (
            ("nodes_featureids", 0), ("nodes_splits", 0.0), ("nodes_truenodeids", leaf_base),
            ("nodes_trueleafs", 1), ("nodes_falsenodeids", leaf_base), ("nodes_falseleafs", 1),
            ("nodes_missing_value_tracks_true", 0),
        ):  # fmt: skip
            attrs[key].append(value)
        return
    attrs["tree_roots"].append(node_index[0])
    for n in internal:
        left, right = int(tree.left[n]), int(tree.right[n])
        attrs["nodes_featureids"].append(int(tree.feature[n]))
        attrs["nodes_splits"].append(float(tree.threshold[n]))
        attrs["nodes_truenodeids"].append(leaf_index.get(left, node_index.get(left)))
        attrs["nodes_trueleafs"].append(int(left in leaf_index))
        attrs["nodes_falsenodeids"].append(leaf_index.get(right, node_index.get(right)))
        attrs["nodes_falseleafs"].append(int(right in leaf_index))
        attrs["nodes_missing_value_tracks_true"].append(int(tree.missing_left[n]))


class Graph:
    """ONNX nodes and initializers built with onnx.helper, named `<prefix><kind>_<n>`."""

    def __init__(self, prefix: str = "") -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0
        self.prefix = prefix

    def const(self, value: Any, dtype: Any = np.float64) -> str:
        from onnx import numpy_helper

        name = self._name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        domain = attrs.pop("op_domain", "")
        attrs.pop("op_version", None)
        name = output or self._name(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], domain=domain, **attrs))
        return name

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{self.prefix}{stem}_{self.count}"


def _link(graph: Graph, raw: str, task: str, targets: int) -> str:
    """Raw scores to probabilities as sklearn's and LightGBM's losses do (logistic, softmax)."""
    if task != CLASSIFICATION:
        return raw
    if targets > 1:
        return graph.op("Softmax", raw, axis=1)
    positive = graph.op("Sigmoid", raw)
    return graph.op("Concat", graph.op("Sub", graph.const([[1.0]]), positive), positive, axis=1)


def _lightgbm_node(node: dict[str, Any], rows: list[dict[str, Any]]) -> int:
    """Number `node` and its subtree depth-first into `rows`; return its index."""
    index = len(rows)
    row: dict[str, Any] = {"leaf": "leaf_value" in node}
    rows.append(row)
    if row["leaf"]:
        row.update(value=node["leaf_value"], feature=0, threshold=0.0, left=-1, right=-1)
        row["missing_left"] = False
        return index
    if node["decision_type"] != "<=" or node["missing_type"] == "Zero":
        raise ExportError(
            f"cannot export a LightGBM split '{node['decision_type']}' with missing type "
            f"{node['missing_type']} (categorical splits, zero_as_missing)"
        )
    threshold = float(node["threshold"])
    # Missing type None: NaN is read as 0.0; NaN: it takes the default side.
    missing_left = node["default_left"] if node["missing_type"] == "NaN" else threshold >= 0.0
    row.update(feature=node["split_feature"], threshold=threshold, value=0.0)
    row["missing_left"] = bool(missing_left)
    row["left"] = _lightgbm_node(node["left_child"], rows)
    row["right"] = _lightgbm_node(node["right_child"], rows)
    return index


def _lightgbm_trees(dump: dict[str, Any], targets: int) -> list[list[_Tree]]:
    """LightGBM's dumped trees (tree i adds to target i % targets), numbered as arrays."""
    per_target: list[list[_Tree]] = [[] for _ in range(targets)]
    for info in dump["tree_info"]:
        rows: list[dict[str, Any]] = []
        _lightgbm_node(info["tree_structure"], rows)
        per_target[info["tree_index"] % targets].append(
            _Tree(
                np.array([r["feature"] for r in rows], dtype=np.int64),
                np.array([r["threshold"] for r in rows], dtype=np.float64),
                np.array([r["left"] for r in rows], dtype=np.int64),
                np.array([r["right"] for r in rows], dtype=np.int64),
                np.array([r["leaf"] for r in rows], dtype=bool),
                np.array([r["missing_left"] for r in rows], dtype=bool),
                np.array([r["value"] for r in rows], dtype=np.float64),
            )
        )
    return per_target


def tree_model(estimator: Any, task: str, width: int) -> Any:
    from onnx import TensorProto, helper

    graph = Graph()
    x = "features"
    kind = type(estimator).__name__
    if kind.startswith("RandomForest"):
        targets = len(estimator.classes_) if task == CLASSIFICATION else 1
        # sklearn's trees compare float32 features with double thresholds: round as they do.
        rounded = graph.op("Cast", graph.op("Cast", x, to=1), to=11)  # float, then double
        trees = [_forest_trees(estimator, t) for t in range(targets)]
        summed = _tree_ensemble(graph, rounded, trees)
        scores = graph.op("Div", summed, graph.const(float(len(estimator.estimators_))))
    elif kind.startswith("HistGradientBoosting"):
        link = type(estimator._loss.link).__name__
        if task != CLASSIFICATION and link != "IdentityLink":
            raise ExportError(f"cannot export a {kind} with {link}")
        targets = estimator.n_trees_per_iteration_
        summed = _tree_ensemble(graph, x, [_hgb_trees(estimator, t) for t in range(targets)])
        baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).reshape(1, -1)
        scores = _link(graph, graph.op("Add", graph.const(baseline), summed), task, targets)
    else:
        dump = estimator.booster_.dump_model()
        objective = dump["objective"].split()
        targets = int(dump["num_tree_per_iteration"])
        if dump.get("average_output"):
            raise ExportError(f"cannot export a {kind} whose boosting averages (rf)")
        if objective[0] not in ("binary", "multiclass", "regression"):
            raise ExportError(f"cannot export a {kind} with objective {dump['objective']!r}")
        raw = _tree_ensemble(graph, x, _lightgbm_trees(dump, targets))
        sigmoid = [float(o.split(":")[1]) for o in objective if o.startswith("sigmoid:")]
        if sigmoid and sigmoid[0] != 1.0:
            raw = graph.op("Mul", raw, graph.const(sigmoid[0]))
        scores = _link(graph, raw, task, targets)
    outputs = []
    if task == CLASSIFICATION:
        classes = np.asarray(estimator.classes_)
        index = graph.op("ArgMax", scores, axis=1, keepdims=0)
        if classes.dtype.kind in "iub":
            labels, elem = graph.const(classes, np.int64), TensorProto.INT64
        else:
            labels, elem = graph.const(classes.astype(str), object), TensorProto.STRING
        graph.op("Gather", labels, index, output="label", axis=0)
        graph.op("Identity", scores, output="probabilities")
        outputs = [
            helper.make_tensor_value_info("label", elem, [None]),
            helper.make_tensor_value_info(
                "probabilities", TensorProto.DOUBLE, [None, len(classes)]
            ),
        ]
    else:
        graph.op("Identity", scores, output="variable")
        outputs = [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])]
    inputs = [helper.make_tensor_value_info(x, TensorProto.DOUBLE, [None, width])]
    return helper.make_model(
        helper.make_graph(graph.nodes, "trees", inputs, outputs, graph.initializers),
        opset_imports=[
            helper.make_opsetid("", TARGET_OPSET[""]),
            helper.make_opsetid("ai.onnx.ml", 5),
        ],
        ir_version=IR_VERSION,
    )
