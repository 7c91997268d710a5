"""Draw ``bench_growth.py --json`` results as one SVG of three panels (no plotting
library needed): publish throughput against subscriptions, node memory against idle
clients, and super-cluster formation time against its connections.

    python bench/bench_growth.py --json growth.json
    python bench/plot_growth.py growth.json docs/_static/growth.svg
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

W, H = 300, 220  # one panel
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 34, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c")


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-9)))
    while (hi - lo) / step > 6:
        step *= 2
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def _label(v: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def panel(
    x0: float,
    title: str,
    xlabel: str,
    ylabel: str,
    series: list[tuple[str, list[tuple[float, float]]]],
    *,
    logx: bool = True,
) -> list[str]:
    """SVG elements of one line chart placed at ``x0``; y starts at 0."""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    xt = _ticks(min(xs), max(xs), logx)
    yt = _ticks(0.0, max(ys) * 1.05, False)
    xlo, xhi, yhi = xt[0], xt[-1], yt[-1]

    def px(x: float) -> float:
        if logx:
            f = (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))
        else:
            f = (x - xlo) / (xhi - xlo)
        return x0 + LEFT + f * (W - LEFT - RIGHT)

    def py(y: float) -> float:
        return TOP + (1 - y / yhi) * (H - TOP - BOTTOM)

    out = [
        f'<text x="{x0 + W / 2}" y="16" text-anchor="middle" font-weight="bold">{title}</text>',
        f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">{xlabel}</text>',
        f'<text transform="translate({x0 + 12},{(TOP + H - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle">{ylabel}</text>',
    ]
    out += [
        f'<line x1="{px(t):.1f}" y1="{TOP}" x2="{px(t):.1f}" y2="{H - BOTTOM}" stroke="#ddd"/>'
        f'<text x="{px(t):.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{_label(t)}</text>'
        for t in xt
    ]
    out += [
        f'<line x1="{x0 + LEFT}" y1="{py(t):.1f}" x2="{x0 + W - RIGHT}" y2="{py(t):.1f}" '
        f'stroke="#ddd"/><text x="{x0 + LEFT - 4}" y="{py(t) + 4:.1f}" '
        f'text-anchor="end">{_label(t)}</text>'
        for t in yt
    ]
    for i, (name, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(pts))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts
        ]
        if len(series) > 1:
            ly = (TOP + H - BOTTOM) / 2 + 14 * i  # mid-height: clear of the lines here
            out.append(
                f'<text x="{x0 + W - RIGHT - 4}" y="{ly}" text-anchor="end" '
                f'fill="{colour}">{name}</text>'
            )
    return out


def render(doc: dict[str, Any]) -> str:
    subs = doc["subscriptions"]
    idle = doc["idle_clients"]
    form = doc["formation"]
    parts = panel(
        0,
        "publish rate vs subscriptions",
        "subscriptions",
        "messages/s",
        [
            ("cache hit", [(r["subscriptions"], r["hit_msgs_per_s"]) for r in subs]),
            ("cache miss", [(r["subscriptions"], r["miss_msgs_per_s"]) for r in subs]),
        ],
    )
    parts += panel(
        W,
        "node memory vs idle clients",
        "idle clients",
        "RSS, MiB",
        [("RSS", [(r["idle_clients"], r["rss_kib"] / 1024) for r in idle])],
    )
    parts += panel(
        2 * W,
        "forming a super-cluster (simulator)",
        "connections (routes + gateways)",
        "seconds",
        [("seconds", [(r["routes"] + r["gateway_connections"], r["seconds"]) for r in form])],
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * W}" height="{H}" '
        f'font-family="sans-serif" font-size="11">'
        f'<rect width="{3 * W}" height="{H}" fill="white"/>' + "".join(parts) + "</svg>\n"
    )


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: plot_growth.py GROWTH_JSON OUTPUT_SVG")
    doc = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(render(doc))


if __name__ == "__main__":
    main()
