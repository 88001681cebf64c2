"""Self-contained HTML reports: inline CSS, figures as base64 PNG, no network at view time.

The Kubeflow dashboard shows an `HTML` artifact in a sandboxed frame, and users open the same
file from a bucket in a browser: neither may need anything beyond the file itself.

All markup lives in Jinja2 templates (kfp_lifecycle/templates/), rendered by one environment
with autoescape on: a value from the data (a category named `<script>`) is shown, never run.
Python builds the content (numbers, figures, sentences); the templates say how it looks.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from numbers import Number
from typing import Any

import jinja2
import matplotlib
from markupsafe import Markup

matplotlib.use("Agg")  # no display on servers or in pipeline pods

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from kfp_lifecycle.core.tasks import METRICS, MetricSpec

# scikit-learn's names for its own output columns, said for people.
_CATEGORY_WORDS = {"infrequent_sklearn": "(rare values)", "__missing__": "(missing)"}


def readable_number(value: Any, digits: int = 4) -> str:
    """A float for people: `digits` significant digits, no float noise (50.830000000000005
    is 50.83); anything else as str()."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def readable_feature(name: str, columns: Iterable[str] = ()) -> str:
    """A model feature named in the input's terms: `onehot__site_infrequent_sklearn` is
    `site = (rare values)`, `onehot__plan_pro` is `plan = pro`,
    `numeric__missingindicator_age` is `age is missing`, `numeric__age` is `age`.

    `columns` (the input columns) tell where a one-hot feature's column name ends and its
    category starts; the longest matching column wins."""
    # ColumnTransformer's "<transformer>__" prefix; the first "__" only: categories may hold one.
    rest = name.split("__", 1)[1] if "__" in name else name
    if rest.startswith("missingindicator_"):
        return f"{rest.removeprefix('missingindicator_')} is missing"
    for column in sorted(columns, key=len, reverse=True):
        if rest.startswith(f"{column}_") and column != rest:
            category = rest[len(column) + 1 :]
            if name.startswith(("onehot__", "ordinal__")) or category in _CATEGORY_WORDS:
                return f"{column} = {_CATEGORY_WORDS.get(category, category)}"
    for raw, words in _CATEGORY_WORDS.items():
        if rest.endswith(f"_{raw}"):
            return f"{rest.removesuffix(f'_{raw}')} = {words}"
    return rest


def markdown_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def is_numeric(value: Any) -> bool:
    """Shown right-aligned as a number: ints and floats (numpy's too), not booleans."""
    return isinstance(value, Number) and not isinstance(value, bool)


@cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment of every report: templates from the package, autoescape on
    for HTML, unknown names an error rather than an empty string."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kfp_lifecycle", "templates"),
        autoescape=jinja2.select_autoescape(("html", "html.j2"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["readable"] = readable_number
    env.filters["md_cell"] = markdown_cell
    env.tests["numeric"] = is_numeric
    return env


def fragment(macro: str, *args: Any, **kwargs: Any) -> Markup:
    """One macro of macros.html.j2, rendered (safe to add to a Section as it is)."""
    module = environment().get_template("macros.html.j2").module
    return Markup(getattr(module, macro)(*args, **kwargs))


def figure_to_img(figure: Figure, alt: str) -> Markup:
    """An <img> holding the figure as an inline PNG; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return fragment("image", base64.b64encode(buffer.getvalue()).decode("ascii"), alt)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], css_id: str = "") -> Markup:
    """An HTML table; numbers are right-aligned and floats shown with 4 significant digits."""
    return fragment("table", list(headers), [list(row) for row in rows], css_id)


def metric_cell(value: Any) -> float | str:
    """A metric as a table cell: finite numbers as floats (right-aligned, 4 significant
    digits), anything else (missing, NaN, infinite) as n/a."""
    if is_numeric(value) and math.isfinite(value):
        return float(value)
    return "n/a"


def better(spec: MetricSpec | None) -> str:
    return "higher" if spec is not None and spec.greater_is_better else "lower"


@dataclass(frozen=True)
class MetricRow:
    """One line of the shared metrics table; name, direction and meaning from METRICS."""

    name: str
    label: str
    value: float | str
    champion: float | str
    better: str
    description: str


def metric_rows(
    metrics: Mapping[str, Any],
    primary: str = "",
    champion: Mapping[str, Any] | None = None,
) -> list[MetricRow]:
    """The rows of the metrics table, in `metrics`' order: the one place a metric's label,
    direction and description are chosen, for the HTML report and the model card alike."""
    rows = []
    for name, value in metrics.items():
        spec = METRICS.get(name)
        rows.append(
            MetricRow(
                name=name,
                label=f"{name} (primary)" if name == primary else name,
                value=metric_cell(value),
                champion=metric_cell((champion or {}).get(name)),
                better=better(spec),
                description=spec.description if spec else "",
            )
        )
    return rows


def metrics_table(
    metrics: Mapping[str, Any],
    primary: str = "",
    champion: Mapping[str, Any] | None = None,
    champion_label: str = "",
    css_id: str = "metric-table",
) -> Markup:
    """The shared metrics table: metric, value, (champion's value,) better, what it measures."""
    rows = metric_rows(metrics, primary, champion)
    return fragment("metrics_table", rows, champion_label if champion else "", css_id)


def metric_columns_table(
    leading: Sequence[str],
    metrics: Sequence[str],
    rows: Iterable[tuple[Sequence[Any], Mapping[str, Any]]],
    css_id: str = "",
) -> Markup:
    """Metrics as columns (one row per slice, window, arm): each row is its leading cells and
    its metrics by name; headers carry METRICS' description as a tooltip."""
    specs = [METRICS.get(name) or MetricSpec(name, "", True) for name in metrics]
    body = [
        [*cells, *(metric_cell(values.get(name)) for name in metrics)] for cells, values in rows
    ]
    return fragment("metric_columns", list(leading), specs, body, css_id)


@dataclass
class Section:
    """One titled part of a report; `key` becomes its element id (tests look sections up by it)."""

    key: str
    title: str
    parts: list[Markup] = field(default_factory=list)

    def add(self, part: Markup) -> Section:
        """Add rendered markup (from `fragment`, `table`, `figure_to_img`); a plain str is
        text and is escaped."""
        self.parts.append(part if isinstance(part, Markup) else Markup.escape(part))
        return self

    def text(self, text: str, css_class: str = "", strong: bool = False) -> Section:
        return self.add(fragment("paragraph", text, css_class, strong))

    def bullets(self, items: Iterable[str]) -> Section:
        return self.add(fragment("bullets", list(items)))


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    page = environment().get_template("page.html.j2")
    return page.render(title=title, subtitle=subtitle, sections=sections)
