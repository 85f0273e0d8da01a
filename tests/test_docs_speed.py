"""The site's speed pages (tools/docs_speed.py, issue 39 item 5): every committed result gets a
page listed in the index, every number sits on the page of the run that measured it (with the
run's spread where it had repeats), an unknown or broken file is a note and never a failure,
and the output is deterministic."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture
def ds(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import docs_speed

    return docs_speed


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _meta(date: str, device: str, cuda=None, **method) -> dict:
    return {
        "date": date,
        "device": device,
        "torch": "2.13.0",
        "build": {"cuda": cuda, "triton": "3.9.0"},
        "command": f"python -m pixelkernels bench --json run-{date}.json",
        "method": {
            "timer": "time.perf_counter",
            "runs": 3,
            "rounds_per_run": 4,
            "cache_flush_mib": 128.0,
            "copy_gbs": 20.0,
            **method,
        },
    }


def _row(backend: str, **kw) -> dict:
    row = {
        "op": "region_stats",
        "workload": "W2",
        "shape": "B=5 D=16 224x224 R=2",
        "dtype": "float32",
        "backend": backend,
        "runs": 3,
        "fwd_ms": 1.0,
        "fwdbwd_ms": 2.0,
        "fwd_ms_runs": [0.9, 1.0, 1.2],
        "fwdbwd_ms_runs": [1.9, 2.0, 2.3],
        "bw_frac_fwd": 0.5,
        "bw_frac_fwdbwd": 0.6,
        "copy_gbs": 20.0,
        "peak_mib": 15.0,
        "max_rel_err": 1e-6,
        "checks_us": 3.0,
        "note": "",
    }
    row.update(kw)
    return row


def _speedups(name: str, fwd: float, fwdbwd: float) -> dict:
    out = {}
    for kind, v in (("fwd", fwd), ("fwdbwd", fwdbwd)):
        out |= {
            f"speedup_{name}_{kind}": v,
            f"speedup_{name}_{kind}_min": v * 0.9,
            f"speedup_{name}_{kind}_max": v * 1.1,
            f"speedup_{name}_{kind}_runs": [v * 0.9, v, v * 1.1],
        }
    return out


@pytest.fixture
def synthetic(tmp_path):
    res = tmp_path / "results"
    ours = _row(
        "cpu",
        **_speedups("reference", 20.0, 21.0),
        **_speedups("baseline", 6.5, 12.0),
        **_speedups("torch_scatter", 4.0, 5.0),
    )
    _write(
        res / "ops_cpu_2026-11-20.json",
        {
            "meta": _meta("2026-11-20", "cpu (x86_64, 2 threads)"),
            "rows": [_row("reference"), _row("baseline"), ours],
        },
    )
    _write(res / "ops_cpu_2026-11-20.txt", "the printed table")
    # the first format: no method, speedups over the reference only
    old = {
        "meta": {
            "date": "2026-11-01",
            "device": "cpu (x86_64, 2 threads)",
            "command": "python -m pixelkernels bench",
        },
        "rows": [
            {
                "op": "region_stats",
                "workload": "W2",
                "backend": "cpu",
                "fwd_ms": 1.0,
                "fwdbwd_ms": 3.0,
                "speedup_fwdbwd": 9.75,
                "bw_frac_fwdbwd": 0.4,
                "copy_gbs": 30.0,
            }
        ],
    }
    _write(res / "old_cpu_2026-11-01.json", old)
    host = {
        "meta": _meta("2026-11-21", "cpu (x86_64, 2 threads)"),
        "rows": [
            {
                "op": "masked_sum",
                "workload": "W2",
                "kind": "fwdbwd",
                "backend": "cpu",
                "host_us": 50.0,
                "host_u": 61.0,
                "vs_baseline": 0.71,
                "aten_ops": 10,
                "syncs": 0,
                "unit_us": 0.82,
                "cuda_launches": 11,
                "triton_launches": None,
                "loss_ops": 8,
            }
        ],
    }
    _write(res / "host_cpu_2026-11-21.json", host)
    gpu = {
        "meta": _meta(
            "2026-11-22",
            "NVIDIA H100 80GB HBM3",
            cuda="13.0",
            timer="cuda events",
            bw_frac_time="graph replay median",
        ),
        "rows": [
            _row("baseline", graph_fwdbwd_ms=1.0),
            _row(
                "cuda",
                graph_fwd_ms=0.05,
                graph_fwdbwd_ms=0.125,
                runs=1,
                speedup_baseline_fwdbwd=3.69,
                speedup_reference_fwdbwd=12.0,
            ),
        ],
    }
    _write(res / "h100_2026-11-22" / "bench" / "bench.json", gpu)
    _write(
        res / "h100_2026-11-22" / "bench" / "verdict.json",
        {
            "facts": {
                "dry": False,
                "started": "2026-11-22 10:00:00 UTC",
                "build_info": {"device": "NVIDIA H100"},
                "host": {"python": "3.12.3", "machine": "x86_64", "cpus": 16},
            },
            "stages": [
                {
                    "name": "bench",
                    "status": "cut",
                    "seconds": 97.8,
                    "passed": 6,
                    "failed": 0,
                    "why": "deadline",
                }
            ],
        },
    )
    _write(
        res / "h100_2026-11-22" / "bench" / "tests.json",
        [
            {"test": "tests.test_region_stats::test_a", "outcome": "passed"},
            {"test": "tests.test_region_stats::test_b", "outcome": "failed"},
        ],
    )
    _write(res / "h100_2026-11-22" / "README.md", "# session notes")
    _write(res / "broken_2026-11-23.json", '{"meta": {"date": "2026-11-23"}, "rows": [')  # cut mid-write
    _write(res / "list_2026-11-23.json", [1, 2, 3])
    _write(
        res / "odd_2026-11-24.json", {"meta": {"date": "2026-11-24", "device": "cpu"}, "rows": [{"what": 1}]}
    )
    _write(
        res / "weird_2026-11-25.json",
        {
            "meta": {
                "date": "2026-11-25",
                "device": "cpu",
                "method": {"cache_flush_mib": "big", "runs": "3"},
            },
            "rows": [{"op": "x", "workload": "W", "backend": "cpu", "fwd_ms": "fast"}],
        },
    )
    _write(res / "notes_2026-11-19.md", "a session's notes")
    return res


def test_synthetic_results_give_a_page_per_run_and_notes_for_the_rest(ds, synthetic, tmp_path):
    out = tmp_path / "out"
    names = ds.generate(synthetic, out)
    assert sorted(names) == sorted(
        [
            "ops_cpu_2026-11-20",
            "old_cpu_2026-11-01",
            "host_cpu_2026-11-21",
            "h100_2026-11-22-bench-bench",
            "odd_2026-11-24",
            "weird_2026-11-25",
        ]
    )
    index = (out / "index.md").read_text()
    for name in names:
        assert (
            (out / f"{name}.md").exists() and f"]({name}.md)" in index and f"\n{name}\n" in index
        )  # toctree
    assert "`benchmarks/results/broken_2026-11-23.json`: not JSON" in index
    assert "`benchmarks/results/list_2026-11-23.json`: not a result" in index
    assert "`benchmarks/results/notes_2026-11-19.md`" in index  # a note without a JSON, listed
    assert "ops_cpu_2026-11-20.txt" not in index  # ... but a run's own printed table is on its page
    assert index.index("## GPU: NVIDIA H100") < index.index("## CPU: cpu (x86_64, 2 threads)")

    page = (out / "ops_cpu_2026-11-20.md").read_text()
    assert page.startswith("# 2026-11-20: cpu (x86_64, 2 threads), ops\n")
    assert (
        "python -m pixelkernels bench --json run-2026-11-20.json" in page
        and "`ops_cpu_2026-11-20.txt`" in page
    )
    line = next(x for x in page.splitlines() if x.startswith("| region_stats | W2 | cpu |"))
    # every speedup with its spread over the run's repeats; the peer is a column of its own
    assert "| 20.0× (18.0–22.0, 3 runs) / 21.0× (18.9–23.1, 3 runs) |" in line
    assert "| 6.50× (5.85–7.15, 3 runs) / 12.0× (10.8–13.2, 3 runs) |" in line
    assert "× torch_scatter fwd / f+b" in page and "4.00× (3.60–4.40, 3 runs)" in line
    times = next(
        x for x in page.splitlines() if x.startswith("| region_stats | W2 | B=5 D=16 224x224 R=2 | cpu |")
    )
    # f+b 2 ms at 60 % of 20 GB/s: 24 MB, 1.2 ms here, 7.2 µs at 3.35 TB/s
    assert "| 1.00 / 2.00 | 50 % / 60 % | 1.20 | 7.16 | 15.0 | 1.0e-06 | 3.00 |" in times
    assert "![Speedups and bandwidth" in page and (out / "ops_cpu_2026-11-20.png").stat().st_size > 1000

    old = (out / "old_cpu_2026-11-01.md").read_text()
    assert "An older result format" in old and "| region_stats | W2 | cpu | – / 9.75× |" in old
    assert "not recorded (an older format" in old

    host = (out / "host_cpu_2026-11-21.md").read_text()
    assert (
        "u = 0.82 µs" in host
        and "| masked_sum | W2 | fwdbwd | cpu | 61.0 | 50.0 | 0.710 | 10 | 11 (3) | – | 0 |" in host
    )

    gpu = (out / "h100_2026-11-22-bench-bench.md").read_text()
    assert "graph fwd / f+b ms" in gpu and "– / 3.69×" in gpu and "3.69× (" not in gpu  # 1 run: no spread
    assert "## The GPU session's verdict" in gpu and "| bench | cut | 97.8 | 6 | 0 | deadline |" in gpu
    assert "1 failed, 1 passed" in gpu and "`tests.test_region_stats::test_b`" in gpu
    assert "`benchmarks/results/h100_2026-11-22/README.md`" in gpu and "host x86_64, 16 CPUs" in gpu
    assert "in a format the generator does not know" in (out / "odd_2026-11-24.md").read_text()
    assert (
        "| x | W | – | cpu | – | – |" in (out / "weird_2026-11-25.md").read_text()
    )  # fields in odd forms: "–"
    assert "NVIDIA H100 80GB HBM3, 2026-11-22" in (out / "gpu.md").read_text()

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    ds.generate(synthetic, out)  # deterministic, and a rebuild redraws nothing
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (synthetic / "host_cpu_2026-11-21.json").unlink()
    ds.generate(synthetic, out)  # a run that is gone loses its page and its plot
    assert not (out / "host_cpu_2026-11-21.md").exists() and not (out / "host_cpu_2026-11-21.png").exists()


def test_every_committed_result_has_a_page_and_every_number_its_run(ds, tmp_path):
    out = tmp_path / "out"
    # its own CPU time (all its threads; ~8 s here), not the wall clock: a busy neighbour (CI's other
    # pytest worker, another job on the machine) stretched the wall time past 20 s
    t = time.process_time()
    names = ds.generate(RESULTS, out, plots=False)
    assert time.process_time() - t < 20
    runs = [p for p in RESULTS.rglob("*.json") if p.name not in ("verdict.json", "tests.json")]
    assert len(names) == len(runs) > 30
    index = (out / "index.md").read_text()
    assert "could not be read" not in index
    for run in runs:
        shown = f"benchmarks/results/{run.relative_to(RESULTS).as_posix()}"
        name = next(n for n in names if (out / f"{n}.md").read_text().count(f"**File:** `{shown}`"))
        page = (out / f"{name}.md").read_text()
        meta = json.loads(run.read_text())["meta"]
        # the page is the run: its date, device and command are on it, next to its numbers
        assert f"**Date:** {meta['date']}" in page and f"**Device:** {meta['device']}" in page
        assert meta["command"] in page and f"]({name}.md)" in index
        assert re.search(r"^\| .*\d", page, re.MULTILINE), f"{name}: no numbers"
    cpu = (out / "cpu_2026-11-23.md").read_text()  # five repeats: every speedup carries its spread
    cells = re.findall(r"\d×(?: \([^)]*\))?", cpu.split("## Times")[0])
    assert cells and all("5 runs)" in c for c in cells)
    assert "seed 00" not in "".join(p.read_text() for p in out.glob("*.md"))  # the papers by name
