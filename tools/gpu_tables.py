"""The GPU tables of the site's speed pages, from every committed GPU result (issue 38 part 3,
issue 39 item 5).

    python tools/gpu_tables.py    print the tables (Markdown)

The site's build writes them to docs/speed/generated/gpu.md (tools/docs_speed.py calls
`tables()`); nothing else keeps a copy. After a GPU session: commit its files under
`benchmarks/results/<device>_<date>/` and rebuild the site.

Sources, all under benchmarks/results/ (any depth): every bench JSON (`{"meta", "rows"}`, what
`python -m pixelkernels bench --json` and the verdict's bench.json write) measured on a CUDA
device, and every verdict's tests.json next to its verdict.json (`bash .ci/gpu`). For each row
of the bench case table that runs on CUDA, and each GPU backend, the newest measurement wins
(by the run's date, then the file's path); a row with none says "not measured", never an older
number without its date. Each measured row carries its device, date and file.

Columns (bench/rows.py): eager and CUDA-graph medians of forward+backward; × baseline and
× reference = their eager median / ours, from the same run (median over runs, and min–max when
there were several); % copy = the row's minimal DRAM bytes / its graph-replay median / the copy
bandwidth measured in that run; H100 floor = those bytes (and the case's FLOPs where modelled)
at an H100 SXM's peak rates (bench/gpu_model.py), the same for every card.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GPU_BACKENDS = ("cuda", "triton")


def _is_gpu(meta: dict) -> bool:
    build = meta.get("build") or {}
    return bool(build.get("cuda")) and not str(meta.get("device", "cpu")).startswith("cpu")


def bench_rows(results: Path = RESULTS) -> dict[tuple[str, str, str], dict]:
    """(op, workload, backend) -> the newest GPU row, with its file, device and date added."""
    best: dict[tuple[str, str, str], dict] = {}
    for path in sorted(results.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data.get("meta"):
            continue
        meta = data["meta"]
        if not _is_gpu(meta):
            continue
        for row in data["rows"]:
            if "kernel" in row:  # `bench --kernels`: device time per kernel, not a timed row
                continue
            key = (row.get("op"), row.get("workload"), row.get("backend"))
            mine = (meta.get("date", ""), str(path))
            if key not in best or mine >= best[key]["_when"]:
                best[key] = {**row, "_when": mine, "_file": path.relative_to(results.parent.parent).as_posix(),
                             "_device": meta.get("device"), "_date": meta.get("date"), "_meta": meta}  # fmt: skip
    return best


def gpu_test_runs(results: Path = RESULTS) -> dict[str, dict]:
    """Test module -> its outcomes in the newest verdict that ran it on a GPU."""
    best: dict[str, dict] = {}
    for tests in sorted(results.rglob("tests.json")):
        verdict = tests.with_name("verdict.json")
        if not verdict.exists():
            continue
        facts = json.loads(verdict.read_text()).get("facts", {})
        if facts.get("dry"):
            continue
        info = facts.get("build_info") or {}
        device, date = info.get("device") or "?", str(facts.get("started", ""))[:10]
        counts: dict[str, dict] = defaultdict(lambda: defaultdict(int))
        for t in json.loads(tests.read_text()):
            parts = t["test"].split("::")[0].split(".")  # junit: tests.test_x[.TestClass]
            module = next((x for x in parts if x.startswith("test_")), parts[-1])
            counts[module][t["outcome"]] += 1
        for module, c in counts.items():
            mine = (date, str(tests))
            if module not in best or mine >= best[module]["_when"]:
                best[module] = {**c, "_when": mine, "_device": device, "_date": date,
                                "_file": tests.relative_to(results.parent.parent).as_posix()}  # fmt: skip
    return best


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _ms(x) -> str:
    return "–" if _missing(x) else f"{x:.3f}"


def _times(row: dict, comparison: str) -> str:
    mid = row.get(f"speedup_{comparison}_fwdbwd")
    if _missing(mid):
        return "–"
    lo, hi = row.get(f"speedup_{comparison}_fwdbwd_min", mid), row.get(f"speedup_{comparison}_fwdbwd_max", mid)
    runs = len(row.get(f"speedup_{comparison}_fwdbwd_runs") or [mid])
    return f"{mid:.2f}×" + (f" ({lo:.2f}–{hi:.2f}, {runs} runs)" if runs > 1 else "")


def _pct(x) -> str:
    return "–" if _missing(x) else f"{100 * x:.0f} %"


def tables(results: Path = RESULTS, floors=None) -> str:
    """The two tables as Markdown. `floors(row, meta)`: a measured row's modelled H100 floor in
    µs, forward+backward (default: docs_speed.floor_us, from the row's own traffic)."""
    from pixelkernels.bench import cases as _cases

    if floors is None:
        from docs_speed import floor_us as floors
    rows = bench_rows(results)
    lines = [
        "**Ops on a GPU** (forward+backward, float32 unless the workload says; newest run of each row):",
        "",
        "| op | workload | backend | eager ms | graph ms | × baseline | × reference | % copy | H100 floor µs | measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    measured = total = 0
    for case in _cases.CASES:
        if "cuda" not in case.devices:
            continue
        for backend in GPU_BACKENDS:
            total += 1
            r = rows.get((case.op, case.id, backend))
            if r is None:
                lines.append(f"| {case.op} | {case.id} | {backend} | – | – | – | – | – | – | not measured |")
                continue
            measured += 1
            floor = floors(r, r["_meta"])
            fl = "–" if _missing(floor) else f"{floor:.1f}"
            lines.append(
                f"| {case.op} | {case.id} | {backend} | {_ms(r.get('fwdbwd_ms'))} | {_ms(r.get('graph_fwdbwd_ms'))} "
                f"| {_times(r, 'baseline')} | {_times(r, 'reference')} | {_pct(r.get('bw_frac_fwdbwd'))} | {fl} "
                f"| {r['_device']}, {r['_date']} (`{r['_file']}`) |"
            )
    lines += ["", f"{measured} of {total} (row, backend) pairs measured on a GPU.", ""]
    runs = gpu_test_runs(results)
    lines += [
        "**Tests on a GPU** (the verdict's correctness stage, `tests.json`; per test module, its newest run):",
        "",
        "| test module | passed | failed | skipped | last ran on a GPU |",
        "|---|---|---|---|---|",
    ]
    for module in sorted(p.stem for p in (ROOT / "tests").glob("test_*.py")):
        c = runs.get(f"{module}")
        if c is None:
            lines.append(f"| {module} | – | – | – | not run by a GPU verdict |")
        else:
            bad = c.get("failed", 0) + c.get("error", 0)
            lines.append(f"| {module} | {c.get('passed', 0)} | {bad} | {c.get('skipped', 0)} "
                         f"| {c['_device']}, {c['_date']} (`{c['_file']}`) |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.parse_args(argv)
    print(tables(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
