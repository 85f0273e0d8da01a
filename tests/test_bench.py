"""The bench machinery (pixelkernels/bench.py, pixelkernels/bench_cases.py): one case table for
`python -m pixelkernels bench` and `benchmarks/`, timed regions with checks off, the checks-on
overhead, clear errors. Timings themselves are never checked."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import pixelkernels as pk
from pixelkernels import bench, bench_cases
from pixelkernels.bench_cases import Case, Inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")
HAS_CPU = "cpu" in pk.available_backends()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_bench_command_runs(tmp_path):
    """`python -m pixelkernels bench` end to end with a short budget: the CPU rows of W2 (every
    op there; the one-hot references of W3 and W4 take seconds a call), JSON and CSV with the
    same rows, the checks-on overhead present."""
    js, cs = tmp_path / "rows.json", tmp_path / "rows.csv"
    r = _python(
        "import pixelkernels.__main__ as m, sys; sys.exit(m.main(['bench', '--quick', '--no-memory', "
        f"'--device', 'cpu', '--workload', 'W2', '--json', {str(js)!r}, '--csv', {str(cs)!r}]))"
    )
    assert r.returncode == 0, r.stderr
    assert "checks us" in r.stdout and "copy bandwidth" in r.stdout
    doc = json.loads(js.read_text())
    meta, rows = doc["meta"], doc["rows"]
    assert {"date", "device", "torch", "build", "command", "method"} <= set(meta)
    assert meta["command"].startswith("python -m pixelkernels bench --quick")
    assert {(row["op"], row["workload"]) for row in rows} == {
        (c.op, c.id) for c in bench_cases.select(ids=["W2"], device="cpu")
    }
    assert len(rows) >= 4
    assert {row["backend"] for row in rows} == {"reference"} | ({"cpu"} if HAS_CPU else set())
    for row in rows:
        assert row["max_rel_err"] < 1e-4 and row["note"] == ""
        assert row["fwd_p20_ms"] <= row["fwd_ms"] <= row["fwd_p80_ms"]
        assert math.isfinite(row["checks_us"]) and row["checks_on_us"] > 0 and row["checks_off_us"] > 0
        assert math.isnan(row["graph_fwd_ms"]) and math.isnan(row["peak_mib"])  # CPU; --no-memory
        assert row["bw_frac_fwd"] > 0
    with open(cs) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and list(table[0]) == list(rows[0])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--workload", "W99"], "unknown workload(s) ['W99']"),
        (["--op", "nope"], "unknown op(s) ['nope']"),
        (["--backend", "gpu"], "unknown backend(s) ['gpu']"),
        (["--workload", "W2-large", "--device", "cpu"], "runs on cpu"),
    ],
)
def test_bad_selection_fails_clearly(capsys, args, message):
    with pytest.raises(SystemExit) as e:
        bench.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_list_shows_the_table(capsys):
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(c.key in out for c in bench_cases.CASES)


def _recording_case(calls, *, wid="T1", loss=bench_cases.weighted_sum, baselines=None):
    """region_stats through the public op on a tiny input, recording for each call whether it
    ran on the workload or the small input and whether checks were on."""
    base = bench_cases._region_stats_inputs(2, 3, 8, 8, 2)
    small = bench_cases._region_stats_inputs(1, 2, 4, 4, 2)
    public = bench_cases.public_op("region_stats")

    def tagged(maker, tag):
        def make(device):
            inp = maker(device)
            inp.aux["tag"] = tag
            return inp

        return make

    def call(inp, backend):
        calls.append((inp.aux["tag"], backend, pk.checks_enabled()))
        return public(inp, backend)

    return Case(
        wid,
        "region_stats",
        "B=2 D=3 8x8 R=2",
        tagged(base, "workload"),
        loss=loss,
        bytes_fwd=bench_cases._region_stats_bytes(False),
        small=tagged(small, "small"),
        call=call,
        baselines=baselines or {},
    )


def test_rows_come_from_the_table_and_timed_calls_run_with_checks_off(monkeypatch):
    calls = []

    def broken(inp):
        raise RuntimeError("no such kernel")

    def no_grad(inp):
        return [t.detach() for t in pk.region_stats(*inp.args, backend="reference")]

    monkeypatch.setattr(
        bench_cases,
        "CASES",
        [
            _recording_case(calls, baselines={"broken": broken, "no_grad": no_grad}),
            _recording_case(calls, wid="T2", loss=None),
        ],
    )
    lines = []
    assert pk.checks_enabled()
    rows = bench.run_bench(CPU, memory=False, log=lines.append, budget_s=0.02)
    assert pk.checks_enabled()  # restored
    names = ["reference"] + (["cpu"] if HAS_CPU else [])
    assert [(r["workload"], r["backend"]) for r in rows] == [
        ("T1", n) for n in names + ["broken", "no_grad"]
    ] + [("T2", n) for n in names]
    # Workload calls (timed, or for the error column) all ran with checks off; the small input
    # ran with checks both on and off, for the overhead figure.
    assert calls and all(not on for tag, _, on in calls if tag == "workload")
    assert {on for tag, _, on in calls if tag == "small"} == {True, False}
    for r in rows:
        if r["backend"] == "broken":
            assert "RuntimeError: no such kernel" in r["note"] and math.isnan(r["fwd_ms"])
            assert any("no such kernel" in line for line in lines)
            continue
        if r["backend"] == "no_grad":  # forward timed, forward+backward reported as failed
            assert r["note"].startswith("forward+backward failed: ValueError") and r["max_rel_err"] == 0
            assert r["fwd_ms"] > 0 and math.isnan(r["fwdbwd_ms"]) and math.isnan(r["checks_us"])
            continue
        assert r["fwd_ms"] > 0 and r["max_rel_err"] < 1e-4 and math.isfinite(r["checks_us"])
        assert math.isfinite(r["bw_frac_fwd"]) and math.isnan(r["bw_frac_fwdbwd"])  # no bytes_fwdbwd
        if r["workload"] == "T1":
            assert r["fwdbwd_ms"] > 0 and math.isfinite(r["speedup_fwdbwd"])
        else:  # an op without backward: forward only
            assert math.isnan(r["fwdbwd_ms"]) and math.isnan(r["speedup_fwdbwd"])
            assert math.isfinite(r["speedup_fwd"])


def test_checks_off_restores_setting():
    pk.set_checks(False)
    try:
        with bench.checks(True):
            assert pk.checks_enabled()
        assert not pk.checks_enabled()
    finally:
        pk.set_checks(True)


def test_pytest_benchmarks_from_table():
    """benchmarks/bench_<op>.py is generated from the table's rows of that op."""
    fwd, fwd_bwd = bench.pytest_benchmarks("region_stats")
    (mark,) = [m for m in fwd.pytestmark if m.name == "parametrize"]
    ids = [p.id for p in mark.args[1]]
    dev = bench.default_device()
    cases = bench_cases.select(["region_stats"], device=dev.type)
    assert ids == [f"{c.id}-{n}" for c in cases for n in bench.backend_names(c, dev)]
    (mark,) = [m for m in fwd_bwd.pytestmark if m.name == "parametrize"]
    assert [p.id for p in mark.args[1]] == ids  # region_stats has a backward


def test_pytest_benchmark_files_run():
    r = subprocess.run(
        # Every file and every backend's rows, each call once; of the references only W2's
        # (the one-hot references of W3 and W4 take seconds a call, ~50 s in all).
        [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         "-k", "not reference or W2"],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout


def test_cpu_peak_memory_in_a_fresh_interpreter():
    case = bench_cases.find("region_stats", "W2")
    mib = bench.peak_mib(case, None, "cpu" if HAS_CPU else "reference", CPU)
    assert 0 < mib < 1024


def test_table_helpers():
    assert bench.percentiles([float(x) for x in range(1, 11)]) == (5.5, 2.8, 8.2)
    assert math.isnan(bench.percentiles([])[0])
    with pytest.raises(KeyError, match="no bench case"):
        bench_cases.find("region_stats", "W99")
    inp = Inputs(args=())
    with pytest.raises(ValueError, match="loss=None"):
        bench_cases.weighted_sum(torch.zeros(3), inp)
    cols = bench._columns(CPU)
    assert not any(key.startswith("graph") for _, key, _, _ in cols)
    row = {key: float("nan") for _, key, _, _ in cols} | {"op": "o", "workload": "w", "backend": "b"}
    assert bench._fmt_row(row, cols).split() == ["o", "w", "b"] + ["-"] * (len(cols) - 3)


# GPU: these run whenever a GPU is lent (the CUDA code paths of the bench).


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_cuda_eager_and_graph(monkeypatch):
    calls = []

    def syncs(inp):  # cannot be captured in a CUDA graph
        emb, labels, r = inp.args
        return pk.region_stats(emb, labels, int(labels.max().item()) + 1, backend="reference")

    monkeypatch.setattr(bench_cases, "CASES", [_recording_case(calls, baselines={"syncs": syncs})])
    lines = []
    rows = bench.run_bench(torch.device("cuda"), memory=True, log=lines.append, budget_s=0.05)
    by = {r["backend"]: r for r in rows}
    for name, r in by.items():
        assert r["fwd_p20_ms"] <= r["fwd_ms"] <= r["fwd_p80_ms"] and r["peak_mib"] >= 0
        if name == "syncs":
            assert math.isnan(r["graph_fwd_ms"]) and "graph capture failed" in r["note"]
        else:
            assert r["graph_fwd_p20_ms"] <= r["graph_fwd_ms"] <= r["graph_fwd_p80_ms"], r
            assert r["graph_fwdbwd_ms"] > 0 and r["note"] == "" and math.isfinite(r["bw_frac_fwd"])
    assert all(not on for tag, _, on in calls if tag == "workload")
