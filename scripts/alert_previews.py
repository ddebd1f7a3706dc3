"""Render the README's pictures of a Discord and a Slack alert: the real payloads, drawn as the clients draw them.

The payloads come from ``pulsetrace.alerts.formats`` (exactly what the agent POSTs); the HTML only
draws them (an embed with its colour bar and inline fields; a Slack attachment with its colour bar
and Block Kit blocks). Headless Chromium takes the screenshots::

    .venv/bin/python scripts/alert_previews.py docs/images

writes ``alert-discord.png`` and ``alert-slack.png`` (the HTML pages are drawn in a temporary folder).
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pulsetrace.alerts import formats
from pulsetrace.alerts.model import Alert, Notice

ALERT = Alert(key="probe:db", severity="critical", title="db is DOWN", service="shop-api", environment="prod",
              source="probe:db", started=1_796_212_800.0, probe="db",
              summary="connect failed: connection refused (127.0.0.1:5432) after 2 checks", value="DOWN", threshold="UP",
              sla_target=99.9, budget_remaining=0.42, revenue_at_risk=360.0, users_affected=5000,
              runbook_url="https://runbooks.example.test/db", command="pulsetrace check")
NOTICE = Notice(ALERT, "firing", 1_796_212_830.0)
FONT = "font-family:'Noto Sans','DejaVu Sans',Arial,sans-serif;"


def _md(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*([^*\n]+)\*", r"<b>\1</b>", out).replace("\n", "<br>")


def discord_html(body: dict[str, Any]) -> str:
    e = body["embeds"][0]
    fields = "".join(
        f'<div style="{"grid-column:span 1" if f["inline"] else "grid-column:1/-1"}"><div class="fn">{html.escape(f["name"])}'
        f'</div><div class="fv">{_md(f["value"])}</div></div>' for f in e["fields"])
    return f"""<!doctype html><meta charset="utf-8"><style>
body{{margin:0;background:#313338;color:#dbdee1;{FONT}font-size:14px}}
.msg{{display:flex;gap:14px;padding:14px 16px}} .av{{width:40px;height:40px;border-radius:50%;background:#5865f2;
flex:none;color:#fff;font-weight:700;display:flex;align-items:center;justify-content:center}}
.who{{color:#f2f3f5;font-weight:600}} .bot{{background:#5865f2;color:#fff;font-size:10px;border-radius:3px;padding:1px 4px;margin-left:4px}}
.embed{{margin-top:6px;background:#2b2d31;border-left:4px solid #{e["color"]:06x};border-radius:4px;padding:10px 14px;max-width:520px}}
.t{{color:#00a8fc;font-weight:600;font-size:15px;margin-bottom:6px}} .d{{margin-bottom:8px}}
.grid{{display:grid;grid-template-columns:repeat(3,1fr);gap:8px 12px}} .fn{{font-weight:600;color:#f2f3f5;font-size:13px}}
.fv{{font-size:13px}} code{{background:#1e1f22;padding:1px 3px;border-radius:3px;font-size:12px}}
.f{{font-size:11px;color:#949ba4;margin-top:8px}}</style>
<div class="msg"><div class="av">P</div><div><span class="who">pulsetrace</span><span class="bot">APP</span>
<div class="embed"><div class="t">{html.escape(e["title"])}</div><div class="d">{_md(e["description"])}</div>
<div class="grid">{fields}</div><div class="f">{html.escape(e["footer"]["text"])}</div></div></div></div>"""


def slack_html(body: dict[str, Any]) -> str:
    att = body["attachments"][0]
    parts = []
    for b in att["blocks"]:
        if b["type"] == "header":
            text = html.escape(b["text"]["text"])
            for colour, emoji in formats.EMOJI.items():  # the machine may have no emoji font: draw the dot
                dot = {"critical": "#dd2e44", "warning": "#f4900c", "resolved": "#77b255"}.get(colour, "#55acee")
                text = text.replace(emoji, f'<span style="color:{dot}">&#9679;</span>')
            parts.append(f'<div class="h">{text}</div>')
        elif b["type"] == "section" and "text" in b:
            parts.append(f'<div class="s">{_md(b["text"]["text"])}</div>')
        elif b["type"] == "section":
            cells = "".join(f'<div>{_md(f["text"])}</div>' for f in b["fields"])
            parts.append(f'<div class="fields">{cells}</div>')
        elif b["type"] == "context":
            links = [re.sub(r"&lt;(https?://[^|]+)\|([^&]+)&gt;", r'<a href="\1">\2</a>', _md(el["text"]))
                     for el in b["elements"]]
            parts.append(f'<div class="c">{" · ".join(links)}</div>')
    return f"""<!doctype html><meta charset="utf-8"><style>
body{{margin:0;background:#fff;color:#1d1c1d;{FONT}font-size:14px}}
.msg{{display:flex;gap:10px;padding:14px 18px}} .av{{width:36px;height:36px;border-radius:6px;background:#4a154b;flex:none;
color:#fff;font-weight:700;display:flex;align-items:center;justify-content:center}} .who{{font-weight:700}}
.app{{background:#e8e8e8;color:#616061;font-size:10px;border-radius:3px;padding:1px 3px;margin-left:4px}}
.att{{margin-top:6px;border-left:4px solid {att["color"]};padding:2px 12px;max-width:540px}}
.h{{font-weight:700;font-size:17px;margin:4px 0 8px}} .s{{margin-bottom:8px}}
.fields{{display:grid;grid-template-columns:1fr 1fr;gap:8px 16px;margin-bottom:8px}}
code{{color:#e01e5a;background:#f8f8f8;border:1px solid #e8e8e8;padding:0 3px;border-radius:3px;font-size:12px}}
.c{{font-size:12px;color:#616061}} a{{color:#1264a3;text-decoration:none}}</style>
<div class="msg"><div class="av">P</div><div><span class="who">pulsetrace</span><span class="app">APP</span>
<div class="att">{"".join(parts)}</div></div></div>"""


def shoot(page: Path, png: Path, size: str) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)


def main(out: Path) -> None:
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, page, size in (("discord", discord_html(formats.discord(NOTICE)), "620,300"),
                                 ("slack", slack_html(formats.slack(NOTICE)), "620,330")):
            html_path = Path(tmp) / f"alert-{name}.html"
            html_path.write_text(page, encoding="utf-8")
            shoot(html_path, out.resolve() / f"alert-{name}.png", size)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
