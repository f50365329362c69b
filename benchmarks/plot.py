"""Small Pillow-only charts for the benchmark report (no matplotlib dependency).

Two chart kinds, each written to a PNG:

- :func:`bar_chart`: horizontal bars on a log axis around a reference value (1x), one bar per
  labelled item, coloured by group, with a value label at the end of each bar; items on the
  losing side of the reference extend to the left of it.
- :func:`scatter_chart`: points on log-log axes (e.g. FPS against peak memory), each drawn
  with a marker (circle, square, triangle, diamond, star) and a number that the legend below
  the plot explains, plus labelled horizontal reference lines.

Everything is drawn at twice the output size and downsampled, for smooth edges. Fonts:
DejaVu Sans when the system has it, else Pillow's built-in scalable font.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["Bar", "Point", "HLine", "bar_chart", "scatter_chart", "PALETTE"]

SS = 2  # supersampling factor
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")
_GRID = "#d9d9d9"
_AXIS = "#333333"
_TEXT = "#111111"


@dataclass(frozen=True)
class Bar:
    """One bar: ``label`` on the left, ``value`` (> 0) on the log axis, ``group`` picks the
    colour and the legend entry, ``note`` is printed after the bar's end."""

    label: str
    value: float
    group: str
    note: str = ""


@dataclass(frozen=True)
class Point:
    """One scatter point at (x, y) (> 0), drawn as ``marker`` in ``color``; ``label`` goes to
    the numbered legend."""

    x: float
    y: float
    label: str
    color: str = PALETTE[0]
    marker: str = "circle"


@dataclass(frozen=True)
class HLine:
    """A horizontal reference line at ``y`` with a label at its left end."""

    y: float
    label: str
    color: str = "#555555"
    dashed: bool = True


def _font(size: int, bold: bool = False) -> ImageFont.ImageFont:
    names = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf") if bold else ("DejaVuSans.ttf",)
    for name in names:
        try:
            return ImageFont.truetype(name, size * SS)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size * SS)
    except TypeError:  # Pillow < 10.1: fixed bitmap font only
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """Major ticks (powers of ten, or 1-2-5 steps over a short range) and minor ticks."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    majors = [10.0 ** k for k in range(a, b + 1)]
    minors = [m * 10.0 ** k for k in range(a, b + 1) for m in range(2, 10)]
    if b - a <= 2:  # short span: label 2 and 5 too
        majors = sorted(majors + [m * 10.0 ** k for k in range(a, b + 1) for m in (2, 5)])
    inside = [t for t in majors if lo * 0.999 <= t <= hi * 1.001]
    return inside, [t for t in minors if lo <= t <= hi and t not in inside]


def _tick_label(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


class _Axes:
    """Maps data to pixels on a log axis (x or y) inside a plot box (supersampled pixels)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float) -> None:
        if not (lo > 0 and hi > lo):
            raise ValueError(f"_Axes(): need 0 < lo < hi for a log axis; got ({lo}, {hi}).")
        self.l0, self.l1, self.p0, self.p1 = math.log10(lo), math.log10(hi), p0, p1

    def __call__(self, v: float) -> float:
        t = (math.log10(v) - self.l0) / (self.l1 - self.l0)
        return self.p0 + t * (self.p1 - self.p0)


def _dashed_line(draw: ImageDraw.ImageDraw, p: tuple[float, float], q: tuple[float, float],
                 fill: str, width: int, dash: int = 10 * SS) -> None:
    (x0, y0), (x1, y1) = p, q
    length = math.hypot(x1 - x0, y1 - y0)
    steps = max(1, int(length // dash))
    for i in range(0, steps, 2):
        a, b = i / steps, min(1.0, (i + 1) / steps)
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                   (x0 + b * (x1 - x0), y0 + b * (y1 - y0))], fill=fill, width=width)


def _vertical_text(img: Image.Image, text: str, font: ImageFont.ImageFont, center: tuple[int, int]
                   ) -> None:
    probe = ImageDraw.Draw(img)
    w, h = _text_size(probe, text, font)
    tile = Image.new("RGBA", (w + 4 * SS, h + 8 * SS), (255, 255, 255, 0))
    ImageDraw.Draw(tile).text((2 * SS, 0), text, font=font, fill=_TEXT)
    tile = tile.rotate(90, expand=True)
    img.paste(tile, (center[0] - tile.width // 2, center[1] - tile.height // 2), tile)


def _finish(img: Image.Image, path: str) -> None:
    """Downsample the supersampled drawing and save it as a 256-colour PNG (small files)."""
    out = img.resize((img.width // SS, img.height // SS), Image.LANCZOS)
    out = out.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out.save(path, optimize=True)


def bar_chart(path: str, bars: Sequence[Bar], title: str, xlabel: str, reference: float = 1.0,
              reference_label: str = "1x (equal)", subtitle: str = "") -> None:
    """Horizontal log-axis bar chart of ``bars`` around ``reference``, saved to ``path``.

    Args:
        path: output PNG.
        bars: the bars, top to bottom; values must be > 0.
        title: chart title; ``subtitle`` a smaller line under it.
        xlabel: axis label under the plot.
        reference: where bars start (the 1x line).
        reference_label: label of the reference line.
    """
    if not bars:
        raise ValueError("bar_chart(): `bars` is empty; nothing to plot.")
    bad = [b.label for b in bars if not (b.value > 0 and math.isfinite(b.value))]
    if bad:
        raise ValueError(f"bar_chart(): bar values must be finite and > 0 (log axis); bad: {bad}")
    f_title, f_text, f_small = _font(20, bold=True), _font(13), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    label_w = max(_text_size(probe, b.label, f_text)[0] for b in bars) + 16 * SS
    note_w = max((_text_size(probe, b.note, f_small)[0] for b in bars), default=0) + 14 * SS
    row_h = 22 * SS
    top = (64 if subtitle else 48) * SS
    legend_h = 34 * SS
    plot_w = 560 * SS
    left = label_w + 12 * SS
    width = left + plot_w + note_w + 24 * SS
    plot_top = top + legend_h
    plot_bottom = plot_top + row_h * len(bars)
    height = plot_bottom + 70 * SS
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((16 * SS, 12 * SS), title, font=f_title, fill=_TEXT)
    if subtitle:
        d.text((16 * SS, 40 * SS), subtitle, font=f_small, fill="#444444")

    values = [b.value for b in bars] + [reference]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    lo = 10.0 ** math.floor(math.log10(lo))
    hi = 10.0 ** math.ceil(math.log10(hi))
    ax = _Axes(lo, hi, left, left + plot_w)
    majors, minors = _log_ticks(lo, hi)
    for t in minors:
        d.line([(ax(t), plot_top), (ax(t), plot_bottom)], fill="#efefef", width=SS)
    for t in majors:
        d.line([(ax(t), plot_top), (ax(t), plot_bottom + 4 * SS)], fill=_GRID, width=SS)
        lab = _tick_label(t) + "x"
        tw, _ = _text_size(d, lab, f_small)
        d.text((ax(t) - tw / 2, plot_bottom + 8 * SS), lab, font=f_small, fill=_TEXT)
    xl_w, _ = _text_size(d, xlabel, f_text)
    d.text((left + plot_w / 2 - xl_w / 2, plot_bottom + 34 * SS), xlabel, font=f_text,
           fill=_TEXT)

    groups: list[str] = []
    for b in bars:
        if b.group not in groups:
            groups.append(b.group)
    colours = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(groups)}
    x_ref = ax(reference)
    for i, b in enumerate(bars):
        y0 = plot_top + i * row_h + 4 * SS
        y1 = y0 + row_h - 8 * SS
        xv = ax(b.value)
        d.rectangle([min(x_ref, xv), y0, max(x_ref, xv), y1], fill=colours[b.group])
        tw, th = _text_size(d, b.label, f_text)
        d.text((left - 10 * SS - tw, (y0 + y1) / 2 - th / 2 - 2 * SS), b.label, font=f_text,
               fill=_TEXT)
        if b.note:
            _, nh = _text_size(d, b.note, f_small)
            nx = max(xv, x_ref) + 6 * SS
            d.text((nx, (y0 + y1) / 2 - nh / 2 - 2 * SS), b.note, font=f_small, fill=_TEXT)
    d.line([(x_ref, plot_top - 4 * SS), (x_ref, plot_bottom)], fill=_AXIS, width=2 * SS)
    rw, _ = _text_size(d, reference_label, f_small)
    d.rectangle([left, plot_top, left + plot_w, plot_bottom], outline=_AXIS, width=SS)

    x = left
    for g in groups:  # legend row above the plot
        d.rectangle([x, top + 8 * SS, x + 14 * SS, top + 22 * SS], fill=colours[g])
        d.text((x + 20 * SS, top + 6 * SS), g, font=f_text, fill=_TEXT)
        x += 20 * SS + _text_size(d, g, f_text)[0] + 24 * SS
    d.text((min(x_ref + 6 * SS, width - rw - 8 * SS), plot_top - 2 * SS - 14 * SS),
           reference_label, font=f_small, fill="#444444")
    _finish(img, path)


def _marker(d: ImageDraw.ImageDraw, kind: str, x: float, y: float, r: float, colour: str) -> None:
    if kind == "square":
        d.rectangle([x - r, y - r, x + r, y + r], fill=colour, outline="black", width=SS)
    elif kind == "triangle":
        d.polygon([(x, y - 1.2 * r), (x - 1.1 * r, y + 0.8 * r), (x + 1.1 * r, y + 0.8 * r)],
                  fill=colour, outline="black")
    elif kind == "diamond":
        d.polygon([(x, y - 1.3 * r), (x + 1.3 * r, y), (x, y + 1.3 * r), (x - 1.3 * r, y)],
                  fill=colour, outline="black")
    elif kind == "star":
        pts = []
        for k in range(10):
            rad = 1.6 * r if k % 2 == 0 else 0.7 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((x + rad * math.cos(a), y + rad * math.sin(a)))
        d.polygon(pts, fill=colour, outline="black")
    else:
        d.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline="black", width=SS)


def scatter_chart(path: str, points: Sequence[Point], title: str, xlabel: str, ylabel: str,
                  hlines: Sequence[HLine] = (), subtitle: str = "",
                  marker_legend: Sequence[tuple[str, str]] = ()) -> None:
    """Log-log scatter with numbered points and a legend underneath, saved to ``path``.

    Args:
        path: output PNG.
        points: the points (x, y > 0); each is numbered 1..n in the plot and the legend.
        title, subtitle: title lines.
        xlabel, ylabel: axis labels.
        hlines: horizontal reference lines (their y values widen the axis as needed).
        marker_legend: (marker kind, meaning) pairs explaining the marker shapes.
    """
    if not points:
        raise ValueError("scatter_chart(): `points` is empty; nothing to plot.")
    bad = [p.label for p in points if not (p.x > 0 and p.y > 0)]
    if bad:
        raise ValueError(f"scatter_chart(): x and y must be > 0 (log axes); bad: {bad}")
    f_title, f_text, f_small = _font(20, bold=True), _font(13), _font(12)
    width, plot_h = 1100 * SS, 560 * SS
    left, right = 90 * SS, 40 * SS
    top = (70 if subtitle else 54) * SS
    plot_bottom = top + plot_h
    probe = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    line_h = 20 * SS
    legend_rows = len(points) + (1 if marker_legend else 0)
    height = plot_bottom + 70 * SS + legend_rows * line_h + 20 * SS
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((16 * SS, 12 * SS), title, font=f_title, fill=_TEXT)
    if subtitle:
        d.text((16 * SS, 40 * SS), subtitle, font=f_small, fill="#444444")

    xs = [p.x for p in points]
    ys = [p.y for p in points] + [h.y for h in hlines]
    xlo = 10.0 ** math.floor(math.log10(min(xs) / 1.5))
    xhi = 10.0 ** math.ceil(math.log10(max(xs) * 1.5))
    ylo = 10.0 ** math.floor(math.log10(min(ys) / 1.5))
    yhi = 10.0 ** math.ceil(math.log10(max(ys) * 1.5))
    ax = _Axes(xlo, xhi, left, width - right)
    ay = _Axes(ylo, yhi, plot_bottom, top)
    xmaj, xmin = _log_ticks(xlo, xhi)
    ymaj, ymin = _log_ticks(ylo, yhi)
    for t in xmin:
        d.line([(ax(t), top), (ax(t), plot_bottom)], fill="#f2f2f2", width=SS)
    for t in ymin:
        d.line([(left, ay(t)), (width - right, ay(t))], fill="#f2f2f2", width=SS)
    for t in xmaj:
        d.line([(ax(t), top), (ax(t), plot_bottom + 4 * SS)], fill=_GRID, width=SS)
        lab = _tick_label(t)
        tw, _ = _text_size(d, lab, f_small)
        d.text((ax(t) - tw / 2, plot_bottom + 8 * SS), lab, font=f_small, fill=_TEXT)
    for t in ymaj:
        d.line([(left - 4 * SS, ay(t)), (width - right, ay(t))], fill=_GRID, width=SS)
        lab = _tick_label(t)
        tw, th = _text_size(d, lab, f_small)
        d.text((left - 8 * SS - tw, ay(t) - th / 2 - 2 * SS), lab, font=f_small, fill=_TEXT)
    d.rectangle([left, top, width - right, plot_bottom], outline=_AXIS, width=SS)
    xw, _ = _text_size(d, xlabel, f_text)
    d.text(((left + width - right) / 2 - xw / 2, plot_bottom + 30 * SS), xlabel, font=f_text,
           fill=_TEXT)
    _vertical_text(img, ylabel, f_text, (24 * SS, int((top + plot_bottom) / 2)))

    taken: list[tuple[float, float, float, float]] = []  # boxes labels must avoid
    for h in hlines:
        y = ay(h.y)
        if h.dashed:
            _dashed_line(d, (left, y), (width - right, y), h.color, 2 * SS)
        else:
            d.line([(left, y), (width - right, y)], fill=h.color, width=2 * SS)
        tw, th = _text_size(d, h.label, f_small)
        d.text((left + 8 * SS, y - th - 6 * SS), h.label, font=f_small, fill=h.color)
        taken.append((left + 8 * SS, y - th - 6 * SS, left + 8 * SS + tw, y))

    r = 6 * SS
    where = [(ax(p.x), ay(p.y)) for p in points]
    for p, (x, y) in zip(points, where):
        _marker(d, p.marker, x, y, r, p.color)
        taken.append((x - 1.6 * r, y - 1.6 * r, x + 1.6 * r, y + 1.6 * r))

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    for i, (x, y) in enumerate(where, 1):
        lab = str(i)
        tw, th = _text_size(d, lab, f_small)
        gap = 1.6 * r + 2 * SS
        spots = [(gap, -th / 2 - 2 * SS), (-gap - tw, -th / 2 - 2 * SS),
                 (-tw / 2, -gap - th - 4 * SS), (-tw / 2, gap - 2 * SS),
                 (gap - 4 * SS, -gap - th), (-gap - tw + 4 * SS, -gap - th),
                 (gap - 4 * SS, gap - 4 * SS), (-gap - tw + 4 * SS, gap - 4 * SS),
                 (2 * gap, -th / 2 - 2 * SS), (-2 * gap - tw, -th / 2 - 2 * SS)]
        boxes = [(x + dx, y + dy, x + dx + tw, y + dy + th + 4 * SS) for dx, dy in spots]
        # the first spot that overlaps nothing, else the least overlapping one
        box = min(boxes, key=lambda b: (sum(overlap(b, q) for q in taken), boxes.index(b)))
        taken.append(box)
        d.text((box[0], box[1]), lab, font=f_small, fill=_TEXT)

    y = plot_bottom + 58 * SS
    for i, p in enumerate(points, 1):
        _marker(d, p.marker, left + 6 * SS, y + 9 * SS, 5 * SS, p.color)
        d.text((left + 20 * SS, y), f"{i}  {p.label}", font=f_small, fill=_TEXT)
        y += line_h
    if marker_legend:
        x = left
        for kind, meaning in marker_legend:
            _marker(d, kind, x + 6 * SS, y + 9 * SS, 5 * SS, "#bbbbbb")
            d.text((x + 18 * SS, y), meaning, font=f_small, fill=_TEXT)
            x += 30 * SS + _text_size(probe, meaning, f_small)[0]
    _finish(img, path)
