"""Score over time as an inline SVG, drawn on the server: no script and no third-party code in the page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape

WIDTH, HEIGHT, MARGIN = 640, 200, 36


def score_plot(
    points: Sequence[tuple[float, float]],
    threshold: float | None = None,
    title: str = "score",
    *,
    dots: Sequence[tuple[float, float]] | None = None,
    marks: Sequence[tuple[float, str]] = (),
    thresholds: Sequence[tuple[str, float]] = (),
) -> str:
    """An SVG line of (epoch seconds, score) points, in time order (two points at one time draw a step),
    with the threshold as a dashed line. `dots` are drawn as circles (every point when None: the events,
    not the samples of a curve), `marks` as labelled vertical lines (the decisions and their response),
    `thresholds` as labelled dashed lines (each response's least score). The SVG carries a <title> and a
    <desc> listing the dots and the marks, for screen readers."""
    pts = sorted(points, key=lambda p: p[0])  # stable: a step keeps its order (before, then after)
    shown = sorted(dots) if dots is not None else pts
    said = [f"{_when(t)} {s:g}" for t, s in shown] + [f"{_when(t)} decided {r}" for t, r in sorted(marks)]
    desc = "; ".join(said) or "no decisions yet"
    head = (
        f'<svg class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg" aria-labelledby="plot-title plot-desc">'
        f'<title id="plot-title">{escape(title)}</title><desc id="plot-desc">{escape(desc)}</desc>'
    )
    if not pts:
        return head + f'<text x="{MARGIN}" y="{HEIGHT // 2}">no scores recorded</text></svg>'
    t0, t1 = pts[0][0], pts[-1][0]
    top = max([s for _, s in pts] + ([threshold] if threshold is not None else []) + [v for _, v in thresholds] + [1.0])
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
    for name, value in thresholds:
        parts.append(
            f'<line class="threshold" x1="{MARGIN}" y1="{y(value):.1f}" x2="{WIDTH - MARGIN}" '
            f'y2="{y(value):.1f}" stroke-dasharray="4 4"/>'
            f'<text class="threshold-label" x="{WIDTH - MARGIN}" y="{y(value) - 3:.1f}" text-anchor="end">'
            f"{escape(name)} {value:g}</text>"
        )
    for t, response in marks:
        if t0 <= t <= t1:  # a decision outside the curve's time (older than its events) is not drawn
            parts.append(
                f'<line class="decision" x1="{x(t):.1f}" y1="{MARGIN}" x2="{x(t):.1f}" y2="{HEIGHT - MARGIN}"/>'
                f'<text class="decision-label" x="{x(t) + 3:.1f}" y="{MARGIN - 4}">{escape(response)}</text>'
            )
    line = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, s in pts)
    parts.append(f'<polyline class="score" fill="none" points="{line}"/>')
    parts += [f'<circle class="point" cx="{x(t):.1f}" cy="{y(s):.1f}" r="4"/>' for t, s in shown]
    return "".join(parts) + "</svg>"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")
