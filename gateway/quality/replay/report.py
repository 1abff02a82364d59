"""A replay's report: the table ``tierwise policy replay`` prints, and its chart."""

from __future__ import annotations

import math
from pathlib import Path

from gateway.quality.replay import Interval, Replayed, Report
from gateway.quality.stats import Estimate

__all__ = ["table", "write_png"]


def _usd(value: Interval | float) -> str:
    """Three significant figures, the ± to the same decimals (no exponents)."""
    mean = value.mean if isinstance(value, Interval) else value
    d = max(0, 2 - math.floor(math.log10(mean))) if mean > 0 else 2
    return f"${mean:.{d}f}" + (f" ±{(value.high - value.low) / 2:.{d}f}" if isinstance(value, Interval) else "")


def _pct(i: Interval) -> str:
    return f"{i.mean:.1%} ±{(i.high - i.low) / 2 * 100:.1f}"


def _quality(e: Estimate | None) -> str:
    if e is None:
        return "unknown"
    return f"{e.mean:.1%} ±{e.plus_minus * 100:.1f}" + ("" if e.enough else " *")


def _shares(p: Replayed) -> str:
    return " ".join(f"{tier} {share:.0%}" for tier, share in p.shares.items())


def table(report: Report) -> str:
    served, ps = report.served, report.policies
    ref = "/".join(report.reference)
    frontier = ps[0].frontier
    head = ["", "as served (ledger)", *(p.label for p in ps)]
    rows = [
        ["policy", f"{served.requests} requests", *(Path(p.source).name for p in ps)],
        ["router", "", *(p.router for p in ps)],
        [
            "cost / 1k requests",
            _usd(served.cost_usd / served.requests * 1000) if served.requests else "-",
            *(_usd(p.cost_per_1k) for p in ps),
        ],
        [
            f"saved vs all-{frontier}",
            f"{1 - served.cost_usd / served.frontier_cost_usd:.1%}" if served.frontier_cost_usd else "-",
            *(_pct(p.saved) for p in ps),
        ],
        [f"quality vs {ref}", _quality(report.served_quality), *(_quality(p.quality) for p in ps)],
        ["  unknown as bad..good", "", *(f"{p.quality_bounds[0]:.1%}..{p.quality_bounds[1]:.1%}" for p in ps)],
        [
            f"{frontier} share",
            f"{served.per_tier.get(frontier, 0) / served.requests:.1%}" if served.requests else "-",
            *(f"{p.shares[p.frontier]:.1%}" for p in ps),
        ],
        [
            "tier shares",
            " ".join(f"{t} {served.per_tier.get(t, 0) / served.requests:.0%}" for t in ps[0].shares)
            if served.requests
            else "",
            *(_shares(p) for p in ps),
        ],
        ["n judged", "", *(str(p.judged) for p in ps)],
        ["n unknown", "", *(str(p.unknown) for p in ps)],
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    window = f" since {report.since}" if report.since else ""
    rates = ", ".join(f"{r:g}" for r in report.sample_rates)
    notes = [
        f"Replay of {report.replayed} of {report.judgements} judged requests{window} (sample rate {rates}; "
        "each weighted by 1 / rate), cost and shares at each policy's prices.",
        *lines,
        f"quality: the judged share of answers not beaten by {ref}'s, 95% interval (Wilson)"
        + ("; * fewer than 30 effective samples" if any("*" in c for c in rows[4]) else ""),
        "unknown: requests the policy sends to a tier whose answer was not judged for them; they are left out "
        "of quality, whose range shows them all inadequate..all adequate",
    ]
    notes += [f"not replayed: {n} ({why})" for why, n in report.skipped.items()]
    return "\n".join(notes)


def error_bars(interval: Interval | Estimate, scale: float = 1.0) -> list[list[float]]:
    """matplotlib's [[below], [above]] for an interval; never negative (a mean of 100% can sit a
    rounding error above an interval clipped at 100%, and matplotlib refuses the negative bar)."""
    return [[max(0.0, interval.mean - interval.low) * scale], [max(0.0, interval.high - interval.mean) * scale]]


def write_png(report: Report, path: Path) -> None:
    """Cost against judged quality, each policy with its intervals (and the range its unknowns span)."""
    import matplotlib  # noqa: PLC0415 - plotting only when asked

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ref = "/".join(report.reference)
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for p, colour in zip(report.policies, colours, strict=False):
        c = p.cost_per_1k
        label = f"{p.label}: {Path(p.source).name}, {p.router}\nsaved {p.saved.mean:.0%}, {p.unknown} unknown"
        if p.quality is None:
            ax.axvline(c.mean, color=colour, linestyle=":", label=f"{label}, quality unknown")
            continue
        q = p.quality
        lo, hi = p.quality_bounds
        ax.vlines(c.mean, lo * 100, hi * 100, colors=colour, alpha=0.2, linewidth=9)
        ax.errorbar(
            c.mean,
            q.mean * 100,
            xerr=error_bars(c),
            yerr=error_bars(q, 100),
            fmt="o",
            color=colour,
            capsize=4,
            label=label,
        )
    first = report.policies[0]
    ax.plot(first.frontier_cost_per_1k, 100, "x", color="grey", label=f"all on {first.frontier}")
    ax.set_xlim(left=-0.03 * ax.get_xlim()[1])  # room for a policy that costs next to nothing
    ax.set_xlabel("cost per 1,000 requests (USD)")
    ax.set_ylabel(f"quality relative to {ref} (%)")
    window = f" since {report.since}" if report.since else ""
    ax.set_title(f"Replay of {report.replayed} judged requests{window}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")  # dear and worse: the corner a policy seldom is
    fig.text(
        0.01, 0.01, "bars: 95% intervals; shaded: quality if the unknowns were all inadequate..all adequate", fontsize=7
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
