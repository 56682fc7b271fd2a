"""The HTML page of a report as it is built: headings, notes, tables and figures (each written to
``RUN/report/NAME.png`` and linked relatively), then the whole page in one atomic write."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

import attreval.plots as plots
from attreval.report.text import HOW_TO_READ
from attreval.runs.reader import Run
from attreval.runs.store import atomic_write

log = logging.getLogger("attreval.report")

FIGURE_DIR = "report"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: .5em 0; border: 1px solid #eee; }
img.broken { border: 2px solid red; min-height: 2em; }
.note { color: #8a6d3b; background: #fcf8e3; padding: .3em .6em; border-left: 3px solid #e0c060; }
.how { color: #444; font-size: 14px; max-width: 900px; }
.caption { color: #444; font-size: 13px; max-width: 1100px; margin-top: -.2em; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; font-size: 12px; }
"""

# Marks figures that did not load (red border, alt text, console error) and counts them on <body>.
SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!(images[i].complete && images[i].naturalWidth > 0)) {
      broken++;
      images[i].classList.add("broken");
      images[i].alt = "missing figure: " + images[i].getAttribute("src");
      console.error("attreval report: missing figure " + images[i].getAttribute("src"));
    }
  }
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-broken-images", broken);
});
"""


@dataclass
class Page:
    """Accumulates HTML and figure files while the report of ``run`` is built."""

    run: Run
    dpi: int
    parts: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        ident = f' id="{html.escape(anchor)}"' if anchor else ""
        self.add(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        log.info("report: %s", text)
        self.add(f'<p class="note">{html.escape(text)}</p>')

    def how(self, key: str) -> None:
        self.add(f'<p class="how"><b>How to read.</b> {html.escape(HOW_TO_READ[key])}</p>')

    def table(self, frame: pd.DataFrame, digits: int = 3, index: bool = True, fmt: str = "f") -> None:
        """``frame`` as an HTML table, floats as ``f"{v:.{digits}{fmt}}"``, missing values as –."""
        self.add(frame.to_html(float_format=lambda v: f"{v:.{digits}{fmt}}", na_rep="–", border=0, index=index))

    def figure(self, name: str, make, alt: str) -> None:
        """Render ``make()`` to ``report/NAME.png`` and link it; a ``ValueError`` becomes a note."""
        try:
            fig = make()
        except ValueError as err:
            self.note(f"{alt}: skipped ({err})")
            return
        filename = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png"
        path = plots.save(fig, self.run.root / FIGURE_DIR / filename, dpi=self.dpi)
        self.figures.append(path)
        self.add(f'<img src="{FIGURE_DIR}/{quote(filename)}" alt="{html.escape(alt)}">')

    def write(self) -> Path:
        """Write ``RUN/report.html`` atomically and delete figures of earlier reports that this one did not
        draw; returns the HTML path."""
        page = (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>attreval report</title>'
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )
        folder, keep = self.run.root / FIGURE_DIR, {p.name for p in self.figures}
        for path in folder.glob("*.png") if folder.exists() else ():
            if path.name not in keep:
                path.unlink()
        out = self.run.root / "report.html"
        atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
        return out
