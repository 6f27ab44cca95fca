"""Score over time as an inline SVG, drawn on the server: no script and no third-party code in the page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT, MARGIN = 640, 200, 36


def score_plot(points: Sequence[tuple[float, float]], threshold: float | None = None, title: str = "score") -> str:
    """An SVG line of (epoch seconds, score) points, in time order, with the threshold as a dashed line.
    The SVG carries a <title> and a <desc> listing the points, for screen readers."""
    pts = sorted(points)
    desc = "; ".join(f"{_when(t)} {s:g}" for t, s in pts) or "no decisions yet"
    head = (
        f'<svg class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-labelledby="plot-title plot-desc">'
        f'<title id="plot-title">{escape(title)}</title><desc id="plot-desc">{escape(desc)}</desc>'
    )
    if not pts:
        return head + f'<text x="{MARGIN}" y="{HEIGHT // 2}">no scores recorded</text></svg>'
    t0, t1 = pts[0][0], pts[-1][0]
    top = max([s for _, s in pts] + ([threshold] if threshold is not None else []) + [1.0])
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return MARGIN + (t - t0) / span * (WIDTH - 2 * MARGIN) if t1 > t0 else WIDTH / 2

    def y(s: float) -> float:
        return HEIGHT - MARGIN - s / top * (HEIGHT - 2 * MARGIN)

    parts = [head]
    parts.append(
        f'<line class="axis" x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}"/>'
        f'<line class="axis" x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{HEIGHT - MARGIN}"/>'
        f'<text x="4" y="{MARGIN + 4}">{top:g}</text><text x="4" y="{HEIGHT - MARGIN}">0</text>'
        f'<text x="{MARGIN}" y="{HEIGHT - 8}">{escape(_when(t0))}</text>'
    )
    if t1 > t0:
        parts.append(f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - 8}" text-anchor="end">{escape(_when(t1))}</text>')
    if threshold is not None:
        parts.append(
            f'<line class="threshold" x1="{MARGIN}" y1="{y(threshold):.1f}" x2="{WIDTH - MARGIN}" '
            f'y2="{y(threshold):.1f}" stroke-dasharray="4 4"/>'
        )
    line = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s in pts)
    parts.append(f'<polyline class="score" fill="none" points="{line}"/>')
    parts += [f'<circle class="point" cx="{x(t):.1f}" cy="{y(s):.1f}" r="4"/>' for t, s in pts]
    return "".join(parts) + "</svg>"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")
