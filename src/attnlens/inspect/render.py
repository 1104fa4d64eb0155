"""One report, two renderings: markdown (PNGs next to it) and self-contained HTML (PNGs
embedded as base64, inline CSS, no network access, a tiny inline script that marks the page
as rendered once every image has decoded)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnlens.report import markdown_table


@dataclass
class Section:
    """A titled block: paragraphs, tables (lists of row dicts) and PNG names, in order."""

    key: str
    title: str
    parts: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, s: str) -> Section:
        self.parts.append(("text", s))
        return self

    def table(self, rows: list[dict[str, Any]]) -> Section:
        if rows:
            self.parts.append(("table", rows))
        return self

    def image(self, name: str, caption: str = "") -> Section:
        self.parts.append(("image", (name, caption)))
        return self


def to_markdown(title: str, intro: str, sections: list[Section]) -> str:
    out = [f"# {title}\n", intro + "\n"]
    for s in sections:
        out.append(f"\n## {s.title}\n")
        for kind, val in s.parts:
            if kind == "text":
                out.append(val + "\n")
            elif kind == "table":
                out.append(markdown_table(val) + "\n")
            else:
                out.append(f"![{val[1] or val[0]}]({val[0]}.png)\n")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;font-size:13px;margin:.6em 0}td,th{border:1px solid
#ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;
margin:.5em 0}section{border-top:1px solid #ddd;margin-top:1.5em}.pending{color:#a60}"""

_SCRIPT = """window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
var el=document.getElementById('render-check');
el.textContent='rendered '+document.querySelectorAll('section').length+' sections, '+ok+'/'+
imgs.length+' images';el.setAttribute('data-images-ok',ok===imgs.length?'yes':'no');});"""


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return format(v, ".4g")
    return html.escape(str(v))


def to_html(title: str, intro: str, sections: list[Section], folder: Path) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>",
            "<nav><ul>" + "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>'
                                  for s in sections) + "</ul></nav>"]
    for s in sections:
        body.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        for kind, val in s.parts:
            if kind == "text":
                cls = ' class="pending"' if "pending" in val.lower() else ""
                body.append(f"<p{cls}>{html.escape(val)}</p>")
            elif kind == "table":
                cols = list(dict.fromkeys(k for r in val for k in r))
                head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                rows = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in cols)
                               + "</tr>" for r in val)
                body.append(f"<table><tr>{head}</tr>{rows}</table>")
            else:
                data = base64.b64encode((folder / f"{val[0]}.png").read_bytes()).decode()
                body.append(f'<img alt="{html.escape(val[1] or val[0])}" '
                            f'src="data:image/png;base64,{data}">')
        body.append("</section>")
    body.append('<p id="render-check" data-images-ok="pending">not rendered</p>')
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + f"<script>{_SCRIPT}</script></body></html>")
