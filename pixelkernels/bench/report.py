"""The rows as a table (printed as the run goes), as JSON and CSV, and as a Markdown table for
the docs' speed pages. A speedup cell is `median` over the runs, with `(worst-best)` after it when there
were several."""

from __future__ import annotations

import csv
import json
import math
import os
import re

import torch

from .cases import BASELINE, REFERENCE, Case

NAN = float("nan")


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def speedup_cell(row: dict, key: str, digits: int = 1) -> str:
    """`med` or `med (min-max)` of speedup column `key` over the row's runs."""
    med = row.get(key, NAN)
    if row.get("runs", 1) > 1 and not math.isnan(med):
        return f"{med:.{digits}f} ({row[key + '_min']:.{digits}f}-{row[key + '_max']:.{digits}f})"
    return _num(med, f".{digits}f")


class Table:
    """The printed table of a run: fixed columns, one per comparison's speedup (the reference,
    the baseline, each peer installed), the CUDA-graph times on CUDA."""

    def __init__(self, device: torch.device, cases: list[Case], repeat: int = 1):
        peers = []
        for c in cases:
            peers += [p.name for p in c.peers if p.missing() is None and p.name not in peers]
        w_op = max([len(c.op) for c in cases] + [12])
        w_id = max([len(c.id) for c in cases] + [8])
        w_x = 18 if repeat > 1 else 6
        short = {REFERENCE: "ref", BASELINE: "base"}
        cols = [("op", "op", w_op, "<"), ("workload", "workload", w_id, "<"), ("backend", "backend", 13, "<"),
                ("fwd ms", "fwd_ms", 9, ".3f"), ("f+b ms", "fwdbwd_ms", 9, ".3f")]  # fmt: skip
        if device.type == "cuda":
            cols += [("graph fwd", "graph_fwd_ms", 10, ".3f"), ("graph f+b", "graph_fwdbwd_ms", 10, ".3f")]
        for comp in [REFERENCE, BASELINE] + peers:
            name = short.get(comp, comp)
            cols += [(f"x {name} fwd", f"speedup_{comp}_fwd", w_x, "x"),
                     (f"x {name} f+b", f"speedup_{comp}_fwdbwd", max(w_x, len(name) + 8), "x")]  # fmt: skip
        cols += [("peak MiB", "peak_mib", 9, ".1f"), ("max err", "max_rel_err", 9, ".1e"),
                 ("BW fwd", "bw_frac_fwd", 7, ".0%"), ("BW f+b", "bw_frac_fwdbwd", 7, ".0%"),
                 ("checks us", "checks_us", 10, "+.1f")]  # fmt: skip
        self.cols = cols

    def header(self) -> str:
        return " ".join(f"{h:{'<' if f == '<' else '>'}{w}}" for h, _, w, f in self.cols)

    def line(self, row: dict) -> str:
        out = []
        for _, key, w, f in self.cols:
            if f == "<":
                out.append(f"{row[key]:<{w}}")
            elif f == "x":
                out.append(f"{speedup_cell(row, key):>{w}}")
            else:
                out.append(f"{_num(row.get(key, NAN), f):>{w}}")
        return " ".join(out)


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    """Written whole or not at all (a temporary file renamed): a run killed at a deadline while
    writing leaves the previous case's file, never half of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1, default=str)
    os.replace(tmp, path)


def _csv_value(v):
    if isinstance(v, (list, tuple)):
        return " ".join(f"{x:.6g}" for x in v)
    return v


def write_csv(path: str, rows: list[dict]) -> None:
    """One line per row; the per-run lists as space-separated values. Columns: the union over
    the rows (a peer's columns are empty in the rows of cases without it)."""
    fields = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields, restval="")
        wr.writeheader()
        wr.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)


_SPEEDUP = re.compile(r"^speedup_(.+)_(fwd|fwdbwd)$")


def comparisons(rows: list[dict]) -> list[str]:
    """The names the rows' speedups are over (reference, baseline, peers), in order of appearance."""
    out = []
    for r in rows:
        for k in r:
            m = _SPEEDUP.match(k)
            if m and m.group(1) not in out:
                out.append(m.group(1))
    return out


def markdown(rows: list[dict]) -> str:
    """The pixelkernels rows as a Markdown table: times (median over every run's samples), and
    per comparison the speedup `median (worst-best)` over the runs, forward / forward+backward."""
    comps = comparisons(rows)
    theirs = {REFERENCE, BASELINE, *comps}
    head = (
        ["op", "workload", "backend", "fwd / f+b ms"] + [f"× {c} fwd / f+b" for c in comps] + ["BW fwd / f+b"]
    )
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["backend"] in theirs:
            continue
        cells = [r["op"], f"{r['workload']}: {r['shape']}", r["backend"],
                 f"{_num(r['fwd_ms'], '.3g')} / {_num(r['fwdbwd_ms'], '.3g')}"]  # fmt: skip
        cells += [
            f"{speedup_cell(r, f'speedup_{c}_fwd')} / {speedup_cell(r, f'speedup_{c}_fwdbwd')}" for c in comps
        ]
        cells.append(f"{_num(r['bw_frac_fwd'], '.0%')} / {_num(r['bw_frac_fwdbwd'], '.0%')}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
