"""Reading the project's HTML reports as a browser shows them: headless Chromium, and the
content of each <section id=...> (the EDA, evaluation and drift reports all use them)."""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
NO_CHROMIUM = "headless Chromium not installed: apt-get install chromium (make system-deps)"


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with this machine's closed network in mind (no background calls)."""
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *arguments,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class Sections(HTMLParser):
    """Per <section id=...>: its text (heading aside), images and tables; and every src/href
    of the page (a self-contained page has only anchors and inline data)."""

    def __init__(self):
        super().__init__()
        self.text: dict[str, str] = {}
        self.images: dict[str, int] = {}
        self.tables: dict[str, int] = {}
        self.references: list[str] = []
        self._current = None
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self._current = attributes.get("id")
            self.text[self._current] = ""
            self.images[self._current] = self.tables[self._current] = 0
        elif self._current and tag == "img":
            self.images[self._current] += 1
        elif self._current and tag == "table":
            self.tables[self._current] += 1
        self._in_heading = self._in_heading or tag == "h2"
        self.references += [attributes[name] for name in ("src", "href") if attributes.get(name)]

    def handle_endtag(self, tag):
        if tag == "section":
            self._current = None
        elif tag == "h2":
            self._in_heading = False

    def handle_data(self, data):
        if self._current and not self._in_heading:
            self.text[self._current] += data


def sections_of(page: str) -> Sections:
    sections = Sections()
    sections.feed(page)
    return sections


class Tables(HTMLParser):
    """The body rows (cell texts) of each <table id=...> of a page."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self._table = self._row = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
            self.rows[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
            self.rows[self._table].append(self._row)
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body, self._row = False, None

    def handle_data(self, data):
        if self._row:
            self._row[-1] += data
