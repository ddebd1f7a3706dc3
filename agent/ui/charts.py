"""Small inline SVG charts for the health page and the trace waterfall: numbers in, markup out.

Every piece of text that reaches the markup goes through :func:`html.escape`; everything
else is a number this module formats itself, so no stored value can inject markup. No
scripts, no external assets: the charts render with JavaScript off.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from markupsafe import Markup

__all__ = ["STATUS_COLOURS", "timeline", "minute_strip", "line_chart", "bar", "swatch"]

STATUS_COLOURS = {"UP": "#2e9f4f", "DEGRADED": "#e0b100", "DOWN": "#d13212", "UNKNOWN": "#9aa5b1",
                  "NONE": "#e4e7eb"}
_W = 720


def _x(t: float, start: float, end: float, width: float = _W) -> float:
    span = end - start
    return 0.0 if span <= 0 else max(0.0, min(width, (t - start) / span * width))


def timeline(segments: Sequence[tuple[float, float, str]], start: float, end: float, height: int = 18) -> Markup:
    """The reported status over ``[start, end]``: one rect per segment, coloured by status."""
    rects = []
    for a, b, status in segments:
        x1, x2 = _x(a, start, end), _x(b, start, end)
        status = status if status in STATUS_COLOURS else "UNKNOWN"
        rects.append(f'<rect class="seg status-{status}" x="{x1:.2f}" y="0" width="{max(0.5, x2 - x1):.2f}" '
                     f'height="{height}" fill="{STATUS_COLOURS[status]}" data-start="{a:.3f}" data-end="{b:.3f}">'
                     f'<title>{status} for {b - a:.0f}s</title></rect>')
    return Markup(f'<svg class="timeline" viewBox="0 0 {_W} {height}" preserveAspectRatio="none" '
                  f'width="100%" height="{height}" role="img" aria-label="status timeline">'
                  f'<rect x="0" y="0" width="{_W}" height="{height}" fill="{STATUS_COLOURS["NONE"]}"/>'
                  + "".join(rects) + "</svg>")


def minute_strip(minutes: Sequence[tuple[float, str]], start: float, end: float, height: int = 8) -> Markup:
    """The measured time per minute: the worst status the probe had in it."""
    rects = []
    for t, status in minutes:
        x1, x2 = _x(max(t, start), start, end), _x(min(t + 60, end), start, end)
        colour = STATUS_COLOURS.get(status, STATUS_COLOURS["NONE"])
        rects.append(f'<rect class="minute minute-{html.escape(status)}" x="{x1:.2f}" y="0" '
                     f'width="{max(0.5, x2 - x1):.2f}" height="{height}" fill="{colour}"/>')
    return Markup(f'<svg class="minutes" viewBox="0 0 {_W} {height}" preserveAspectRatio="none" width="100%" '
                  f'height="{height}" role="img" aria-label="measured per minute">' + "".join(rects) + "</svg>")


def line_chart(series: Sequence[tuple[str, str, Sequence[tuple[float, float | None]]]], start: float, end: float,
               *, threshold: float | None = None, height: int = 90, unit: str = "") -> Markup:
    """Lines over time: ``(label, colour, [(t, value or None)])`` each; gaps where a value is None."""
    values = [v for _, _, pts in series for _, v in pts if v is not None]
    top = max(values + ([threshold * 1.2] if threshold else []) + [1e-9])
    pad = 4
    inner = height - 2 * pad

    def y(v: float) -> float:
        return pad + inner - (min(v, top) / top) * inner

    parts = [f'<rect x="0" y="0" width="{_W}" height="{height}" fill="#fff"/>']
    if threshold:
        ty = y(threshold)
        parts.append(f'<line class="threshold" x1="0" x2="{_W}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#d13212" '
                     f'stroke-dasharray="4 3" stroke-width="1"/>')
    legend = []
    for label, colour, pts in series:
        runs: list[list[str]] = [[]]
        for t, v in pts:
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{_x(t, start, end):.1f},{y(v):.1f}")
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(run)}" fill="none" stroke="{colour}" '
                             f'stroke-width="1.6"/>')
            elif run:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
        legend.append(f'<span class="key">{swatch(colour)}{html.escape(label)}</span>')
    peak = f"max {top:.2f}{html.escape(unit)}" if values else "no data"
    return Markup(f'<figure class="chart"><svg viewBox="0 0 {_W} {height}" preserveAspectRatio="none" width="100%" '
                  f'height="{height}" role="img">' + "".join(parts) + "</svg>"
                  f'<figcaption>{"".join(legend)}<span class="peak">{peak}</span></figcaption></figure>')


def swatch(colour: str) -> str:
    """A small colour key (SVG: the pages allow no inline styles)."""
    return f'<svg class="swatch" width="10" height="10" aria-hidden="true"><rect width="10" height="10" fill="{colour}"/></svg>'


def bar(fraction: float | None, colour: str = "#2e9f4f") -> Markup:
    """A 0..1 gauge (error budget left): clamped; a negative budget shows as an empty red bar."""
    if fraction is None:
        return Markup('<svg class="gauge" viewBox="0 0 100 8" preserveAspectRatio="none" width="100%" height="8">'
                      '<rect width="100" height="8" fill="#e4e7eb"/></svg>')
    f = max(0.0, min(1.0, fraction))
    fill = colour if fraction > 0.25 else "#e0b100" if fraction > 0 else "#d13212"
    return Markup(f'<svg class="gauge" viewBox="0 0 100 8" preserveAspectRatio="none" width="100%" height="8">'
                  f'<rect width="100" height="8" fill="#e4e7eb"/><rect width="{f * 100:.2f}" height="8" '
                  f'fill="{fill}"/></svg>')
