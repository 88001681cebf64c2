"""Self-contained HTML reports: inline CSS, figures as base64 PNG, no network at view time.

The Kubeflow dashboard shows an `HTML` artifact in a sandboxed frame, and users open the same
file from a bucket in a browser: neither may need anything beyond the file itself.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers or in pipeline pods

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem;
       color: #1f2933; max-width: 1200px; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
     border-bottom: 1px solid #d9e2ec; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d9e2ec; padding: .3rem .6rem; text-align: left; }
th { background: #f0f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #616e7c; } .warn { color: #b44d12; } .error { color: #ba2525; }
.ok { color: #18794e; } figure { display: inline-block; margin: .5rem 1rem .5rem 0; }
nav a { margin-right: 1rem; }
"""


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


def figure_to_img(figure: Figure, alt: str) -> str:
    """An <img> holding the figure as an inline PNG; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], css_id: str = "") -> str:
    """An HTML table; numbers are right-aligned and floats shown with 4 significant digits."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(f'<td class="num">{readable_number(value)}</td>')
            elif isinstance(value, int) and not isinstance(value, bool):
                cells.append(f'<td class="num">{value}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    identifier = f' id="{css_id}"' if css_id else ""
    rows_html = "".join(body)
    return f"<table{identifier}><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"


@dataclass
class Section:
    """One titled part of a report; `key` becomes its element id (tests look sections up by it)."""

    key: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> Section:
        self.parts.append(fragment)
        return self

    def text(self, text: str, css_class: str = "") -> Section:
        attribute = f' class="{css_class}"' if css_class else ""
        return self.add(f"<p{attribute}>{html.escape(text)}</p>")


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='muted'>{html.escape(subtitle)}</p>"
        f"<nav>{nav}</nav>{body}</body></html>"
    )
