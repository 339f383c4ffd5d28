"""The front as a self-contained SVG (no plotting library): weight fraction against the tolerance's
quantity, every evaluated point grey, the front joined, the chosen point ringed. The CLI writes it
and the dashboard inlines it."""

from __future__ import annotations

from html import escape

from carrygate.models.recommend.results import Recommendation
from carrygate.models.recommend.search import badness

W, H, PAD = 640, 360, 48


def front_svg(rec: Recommendation) -> str:
    drop = rec.tolerance.max_predicted_drop is not None
    ylabel = "predicted puzzle-exact drop, 90% upper end" if drop else "fidelity"
    points = [p for p in rec.points if badness(p.damage, rec.tolerance) != float("inf")]
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"><text x="20" y="40">no finite point</text></svg>'

    def yval(p: object) -> float:
        v = badness(p.damage, rec.tolerance)  # type: ignore[attr-defined]
        return v if drop else -v

    xs = [p.cost.weight_fraction for p in points]
    ys = [yval(p) for p in points]
    bound = rec.tolerance.max_predicted_drop if drop else rec.tolerance.min_fidelity
    x0, x1 = 0.0, max(xs) * 1.05
    y0, y1 = min([*ys, bound or 0.0]), max([*ys, bound or 0.0])
    y1 = y1 if y1 > y0 else y0 + 1e-3

    def sx(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def sy(y: float) -> float:
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#999"/>',
           f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">deployed weight bytes / fp32</text>',
           f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{escape(ylabel)}</text>']
    for tick in range(5):
        xv, yv = x0 + (x1 - x0) * tick / 4, y0 + (y1 - y0) * tick / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{H - PAD + 14}" text-anchor="middle">{xv:.2f}</text>')
        out.append(f'<text x="{PAD - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
    if rec.budget.max_weight_fraction is not None and rec.budget.max_weight_fraction <= x1:
        bx = sx(rec.budget.max_weight_fraction)
        out.append(f'<line x1="{bx:.1f}" y1="{PAD}" x2="{bx:.1f}" y2="{H - PAD}" stroke="#c60" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{bx + 3:.1f}" y="{PAD + 12}" fill="#c60">budget</text>')
    if bound is not None:
        by = sy(bound)
        out.append(f'<line x1="{PAD}" y1="{by:.1f}" x2="{W - PAD}" y2="{by:.1f}" stroke="#06c" stroke-dasharray="4 3"/>')
        out.append(f'<text x="{W - PAD - 3}" y="{by - 3:.1f}" text-anchor="end" fill="#06c">tolerance</text>')
    front = sorted((p for p in points if p.on_front), key=lambda p: p.cost.weight_fraction)
    if len(front) > 1:
        path = " ".join(f"{sx(p.cost.weight_fraction):.1f},{sy(yval(p)):.1f}" for p in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#333"/>')
    for p in points:
        colour = "#2a2" if p.within_tolerance and p.within_budget else "#888"
        out.append(f'<circle cx="{sx(p.cost.weight_fraction):.1f}" cy="{sy(yval(p)):.1f}" r="3.5" fill="{colour}">'
                   f'<title>{escape(p.name)} ({p.stage}): {p.cost.weight_fraction:.3f}, {yval(p):.4g}</title></circle>')
    if rec.chosen is not None:
        chosen = next((p for p in points if p.name == rec.chosen.name), None)
        if chosen is not None:
            cx, cy = sx(chosen.cost.weight_fraction), sy(yval(chosen))
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="8" fill="none" stroke="#d00" stroke-width="2"/>')
            out.append(f'<text x="{cx + 10:.1f}" y="{cy - 8:.1f}" fill="#d00">{escape(chosen.name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
