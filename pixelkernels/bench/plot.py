"""`--plot`: one figure per run, one group of bars per workload (op and workload id), one bar
per pixelkernels backend, in three panels: the speedup over the reference, the speedup over the
best-PyTorch baseline (forward+backward, forward for ops without a backward; the bar is the
median over runs, the whisker the worst and best run), and the fraction of the copy bandwidth
(forward+backward). Needs matplotlib."""

from __future__ import annotations

import math
import textwrap

from .cases import BASELINE, REFERENCE
from .report import comparisons

NAN = float("nan")


def _value(row: dict, comp: str) -> tuple[float, float, float]:
    """(median, min, max) of the forward+backward speedup over `comp` (forward if none)."""
    kind = "fwdbwd" if not math.isnan(row.get(f"speedup_{comp}_fwdbwd", NAN)) else "fwd"
    key = f"speedup_{comp}_{kind}"
    return row.get(key, NAN), row.get(key + "_min", NAN), row.get(key + "_max", NAN)


def _bandwidth(row: dict) -> tuple[float, float, float]:
    """(median, min, max) of the copy-bandwidth fraction, forward+backward (forward if none):
    the median's, scaled by each run's median time for the spread."""
    kind = "fwdbwd" if not math.isnan(row.get("bw_frac_fwdbwd", NAN)) else "fwd"
    frac, t = row.get(f"bw_frac_{kind}", NAN), row.get(f"{kind}_ms", NAN)
    runs = [frac * t / r for r in row.get(f"{kind}_ms_runs", []) if r == r and r > 0]
    return frac, min(runs, default=NAN), max(runs, default=NAN)


def plot(rows: list[dict], path: str, title: str = "") -> bool:
    """Draw the rows to `path` (PNG); False (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib)")
        return False
    comps = {REFERENCE, BASELINE, *comparisons(rows)}
    ours = [r for r in rows if r["backend"] not in comps]
    groups = list(dict.fromkeys(f"{r['op']}\n{r['workload']}" for r in ours))
    backends = list(dict.fromkeys(r["backend"] for r in ours))
    width = 0.8 / max(1, len(backends))
    fig, axes = plt.subplots(3, 1, figsize=(max(6.0, 1.1 * len(groups) + 1.5), 9), sharex=True)
    panels = [
        (axes[0], lambda r: _value(r, REFERENCE), "× reference\n(f+b; median, worst-best)", True),
        (axes[1], lambda r: _value(r, BASELINE), "× best PyTorch\n(f+b; median, worst-best)", True),
        (axes[2], _bandwidth, "fraction of copy\nbandwidth (f+b)", False),
    ]
    for ax, get, label, log in panels:
        for j, b in enumerate(backends):
            xs, ys, lo, hi = [], [], [], []
            for i, g in enumerate(groups):
                r = next((r for r in ours if r["backend"] == b and f"{r['op']}\n{r['workload']}" == g), None)
                if r is None:
                    continue
                med, mn, mx = get(r)
                if math.isnan(med):
                    continue
                xs.append(i + (j - (len(backends) - 1) / 2) * width)
                ys.append(med)
                # a single run's min and max equal its median up to rounding: no negative whisker
                lo.append(max(med - mn, 0.0) if not math.isnan(mn) else 0.0)
                hi.append(max(mx - med, 0.0) if not math.isnan(mx) else 0.0)
            bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=b)
            ax.bar_label(bars, labels=[f"{y:.0%}" if not log else f"{y:.1f}x" for y in ys], fontsize=7,
                         padding=2)  # fmt: skip
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.margins(y=0.15)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(title="backend", fontsize=8)
    axes[2].set_xticks(range(len(groups)))
    axes[2].set_xticklabels(groups, fontsize=7)
    if title:
        axes[0].set_title("\n".join(textwrap.wrap(title, 95)), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
