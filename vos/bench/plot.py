"""Line plots as PNG with Pillow alone (matplotlib is not a dependency).

A plot is a vertical stack of :class:`Panel` s sharing one x axis label; each panel has its own y
axis, grid, ticks and legend. Enough for "FPS vs frame" and "memory vs frame".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Distinct colours (Tableau 10) for the series of a panel, in order.
COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


@dataclass
class Panel:
    """One plot area: ``series`` maps a legend label to (xs, ys); ``y_zero``: start the y axis at 0."""

    title: str
    ylabel: str
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    y_zero: bool = True


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k) covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def save_plot(
    path: str | os.PathLike, panels: list[Panel], xlabel: str, width: int = 960, panel_height: int = 340
) -> Path:
    """Draw ``panels`` one below the other and write a PNG to ``path`` (written atomically)."""
    path = Path(path)
    font = ImageFont.load_default()
    image = Image.new("RGB", (width, panel_height * len(panels) + 30), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 78, 20, 30, 42
    for p_idx, panel in enumerate(panels):
        y0 = p_idx * panel_height
        box = (left, y0 + top, width - right, y0 + panel_height - bottom)
        xs_all = [x for xs, _ in panel.series.values() for x in xs]
        ys_all = [y for _, ys in panel.series.values() for y in ys if y is not None and math.isfinite(y)]
        x_lo, x_hi = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
        y_lo, y_hi = (min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0)
        if panel.y_zero:
            y_lo = min(0.0, y_lo)
        x_ticks, y_ticks = nice_ticks(x_lo, x_hi), nice_ticks(y_lo, y_hi * 1.02 if y_hi > 0 else y_hi)
        x_lo, x_hi = min(x_ticks[0], x_lo), max(x_ticks[-1], x_hi)
        y_lo, y_hi = min(y_ticks[0], y_lo), max(y_ticks[-1], y_hi)

        def to_px(x: float, y: float) -> tuple[float, float]:
            fx = (x - x_lo) / ((x_hi - x_lo) or 1.0)
            fy = (y - y_lo) / ((y_hi - y_lo) or 1.0)
            return box[0] + fx * (box[2] - box[0]), box[3] - fy * (box[3] - box[1])

        for t in y_ticks:
            _, py = to_px(x_lo, t)
            draw.line([(box[0], py), (box[2], py)], fill=(225, 225, 225))
            draw.text((box[0] - 6, py), _fmt(t), fill="black", font=font, anchor="rm")
        for t in x_ticks:
            px, _ = to_px(t, y_lo)
            draw.line([(px, box[1]), (px, box[3])], fill=(235, 235, 235))
            draw.text((px, box[3] + 6), _fmt(t), fill="black", font=font, anchor="mt")
        draw.rectangle(box, outline="black")
        draw.text(((box[0] + box[2]) / 2, y0 + 8), panel.title, fill="black", font=font, anchor="mt")
        draw.text((6, y0 + top - 16), panel.ylabel, fill="black", font=font)
        if p_idx == len(panels) - 1:
            draw.text(((box[0] + box[2]) / 2, box[3] + 24), xlabel, fill="black", font=font, anchor="mt")

        for s_idx, (xs, ys) in enumerate(panel.series.values()):
            color = COLORS[s_idx % len(COLORS)]
            points = [to_px(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
            if len(points) == 1:
                px, py = points[0]
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)
            elif points:
                draw.line(points, fill=color, width=2)
        if panel.series:  # legend on a white box, drawn over the lines
            draw.rectangle((box[2] - 176, box[1] + 2, box[2] - 2, box[1] + 14 * len(panel.series) + 4),
                           fill="white", outline=(200, 200, 200))
        for s_idx, label in enumerate(panel.series):
            color = COLORS[s_idx % len(COLORS)]
            ly = box[1] + 8 + 14 * s_idx
            draw.line([(box[2] - 170, ly), (box[2] - 150, ly)], fill=color, width=3)
            draw.text((box[2] - 145, ly), label, fill="black", font=font, anchor="lm")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def save_histogram(
    path: str | os.PathLike, edges: list[float], counts: list[int], title: str, xlabel: str,
    ylabel: str = "objects x frames", width: int = 720, height: int = 360, note: str | None = None,
) -> Path:
    """A bar chart of a histogram (``edges``: left bin edges, equal widths; ``counts`` per bin)."""
    path = Path(path)
    font = ImageFont.load_default()
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 78, 20, 30, 46
    box = (left, top, width - right, height - bottom)
    step = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
    x_lo, x_hi = edges[0], edges[-1] + step
    y_ticks = nice_ticks(0.0, max(counts) * 1.05 if counts and max(counts) else 1.0)
    y_hi = y_ticks[-1] or 1.0

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (box[0] + (x - x_lo) / (x_hi - x_lo) * (box[2] - box[0]), box[3] - y / y_hi * (box[3] - box[1]))

    for t in y_ticks:
        _, py = to_px(x_lo, t)
        draw.line([(box[0], py), (box[2], py)], fill=(225, 225, 225))
        draw.text((box[0] - 6, py), _fmt(t), fill="black", font=font, anchor="rm")
    for t in nice_ticks(x_lo, x_hi):
        if x_lo <= t <= x_hi:
            px, _ = to_px(t, 0)
            draw.text((px, box[3] + 6), _fmt(t), fill="black", font=font, anchor="mt")
    for edge, count in zip(edges, counts):
        x0, y0 = to_px(edge, count)
        x1, y1 = to_px(edge + step, 0)
        if count:
            draw.rectangle((x0 + 1, y0, x1 - 1, y1), fill=COLORS[0])
    draw.rectangle(box, outline="black")
    draw.text(((box[0] + box[2]) / 2, 8), title, fill="black", font=font, anchor="mt")
    draw.text((6, top - 16), ylabel, fill="black", font=font)
    draw.text(((box[0] + box[2]) / 2, box[3] + 24), xlabel, fill="black", font=font, anchor="mt")
    if note:
        draw.text((box[0] + 8, box[1] + 8), note, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path
