"""The bench machinery (pixelkernels/bench/): one case table for `python -m pixelkernels bench`
and `benchmarks/`, every row compared with the reference and the best-PyTorch baseline (in the
row's dtype), repeated side-by-side runs with the spread of every speedup, timed regions with
checks off, the checks-on overhead at the workload's size, clear errors, JSON / CSV / Markdown /
plot. Timings themselves are never checked."""

from __future__ import annotations

import collections
import csv
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pixelkernels as pk
from pixelkernels import bench
from pixelkernels.bench import cases as bench_cases
from pixelkernels.bench import memory, report, timing
from pixelkernels.bench.cases import Case, Inputs, Peer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")
HAS_CPU = "cpu" in pk.available_backends()
OURS = ["cpu"] if HAS_CPU else []


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_bench_command_runs(tmp_path):
    """`python -m pixelkernels bench` end to end with a short budget and two runs: the CPU rows of
    region_stats at W2 (the one-hot references of W3 and W4 take seconds a call), JSON, CSV and
    Markdown with the same rows, both speedups with their spread, the checks-on overhead."""
    js, cs, md = tmp_path / "rows.json", tmp_path / "rows.csv", tmp_path / "rows.md"
    args = ["bench", "--quick", "--no-memory", "--repeat", "2", "--device", "cpu", "--workload", "W2"]
    args += ["--op", "region_stats"]
    args += ["--json", str(js), "--csv", str(cs), "--markdown", str(md)]
    r = _python(f"import pixelkernels.__main__ as m, sys; sys.exit(m.main({args!r}))")
    assert r.returncode == 0, r.stderr
    assert "checks us" in r.stdout and "copy bandwidth" in r.stdout and "x base f+b" in r.stdout
    doc = json.loads(js.read_text())
    meta, rows = doc["meta"], doc["rows"]
    assert {"date", "device", "torch", "build", "command", "method"} <= set(meta)
    assert meta["command"].startswith("python -m pixelkernels bench --quick") and meta["method"]["runs"] == 2
    cases = bench_cases.select(["region_stats"], ["W2"], "cpu")
    assert {(row["op"], row["workload"]) for row in rows} == {(c.op, c.id) for c in cases}
    assert {row["backend"] for row in rows} == {"reference", "baseline"} | set(OURS)
    for row in rows:
        assert row["max_rel_err"] < 1e-4 and row["note"] == "" and row["runs"] == 2
        assert row["fwd_p20_ms"] <= row["fwd_ms"] <= row["fwd_p80_ms"] and len(row["fwd_ms_runs"]) == 2
        for comp in ("reference", "baseline"):
            for kind in ("fwd", "fwdbwd"):
                key = f"speedup_{comp}_{kind}"
                assert row[key + "_min"] <= row[key] <= row[key + "_max"], key
                assert len(row[key + "_runs"]) == 2
        assert (
            row[f"speedup_{row['backend']}_fwd"] == 1.0
            if row["backend"] in ("reference", "baseline")
            else True
        )
        mine = row["backend"] not in ("reference", "baseline")
        assert math.isfinite(row["checks_us"]) == mine  # the overhead is measured for our backends
        assert math.isnan(row["graph_fwd_ms"]) and math.isnan(row["peak_mib"])  # CPU; --no-memory
        assert row["bw_frac_fwd"] > 0
    with open(cs) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and list(table[0]) == list(rows[0])
    assert len(table[0]["fwd_ms_runs"].split()) == 2
    lines = md.read_text().splitlines()
    assert len(lines) == 2 + len(rows) - 2 * len(cases)  # our rows only
    assert "× baseline fwd / f+b" in lines[0]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--workload", "W99"], "unknown workload(s) ['W99']"),
        (["--op", "nope"], "unknown op(s) ['nope']"),
        (["--backend", "gpu"], "unknown backend(s) ['gpu']"),
        (["--workload", "W2-large", "--device", "cpu"], "runs on cpu"),
        (["--repeat", "0"], "--repeat must be at least 1"),
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
    assert "torch_scatter" in out  # region_stats' optional peer


def _recording_case(calls, *, wid="T1", loss=bench_cases.weighted_sum, peers=()):
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
        peers=peers,
    )


def test_rows_come_from_the_table_and_timed_calls_run_with_checks_off(monkeypatch):
    calls = []

    def broken(inp):
        raise RuntimeError("no such kernel")

    def no_grad(inp):
        return [t.detach() for t in pk.region_stats(*inp.args, backend="reference")]

    peers = (
        Peer("broken", None, broken),
        Peer("no_grad", None, no_grad),
        Peer("absent", "no_such_module_here", broken),
    )
    monkeypatch.setattr(
        bench_cases,
        "CASES",
        [_recording_case(calls, peers=peers), _recording_case(calls, wid="T2", loss=None)],
    )
    lines = []
    assert pk.checks_enabled()
    seen = []  # on_case: the rows so far after each case (the CLI's --json, rewritten per case)
    rows = bench.run_bench(CPU, memory=False, log=lines.append, budget_s=0.02, repeat=3,
                           on_case=lambda r: seen.append([x["workload"] for x in r]))  # fmt: skip
    assert seen == [["T1"] * (len(OURS) + 4), ["T1"] * (len(OURS) + 4) + ["T2"] * (len(OURS) + 2)]
    assert pk.checks_enabled()  # restored
    first = ["reference", "baseline"]
    assert [(r["workload"], r["backend"]) for r in rows] == [
        ("T1", n) for n in first + ["broken", "no_grad"] + OURS
    ] + [("T2", n) for n in first + OURS]
    assert any("peer absent skipped: no_such_module_here is not installed" in line for line in lines)
    # Workload calls (timed, for the error column, or for the checks-on overhead) ran with checks
    # off except the overhead's "on" half, at the workload's size; the small input only primes.
    assert {on for tag, b, on in calls if tag == "workload" and b != "reference"} == (
        {True, False} if HAS_CPU else {False}
    )
    assert all(not on for tag, b, on in calls if tag == "small" or b == "reference")
    for r in rows:
        assert r["runs"] == 3 and len(r["fwd_ms_runs"]) == 3
        if r["backend"] == "broken":
            assert "RuntimeError: no such kernel" in r["note"] and math.isnan(r["fwd_ms"])
            assert math.isnan(r["speedup_reference_fwd"])
            assert any("no such kernel" in line for line in lines)
            continue
        if r["backend"] == "no_grad":  # forward timed, forward+backward reported as failed
            assert r["note"].startswith("forward+backward failed: ValueError") and r["max_rel_err"] == 0
            assert r["fwd_ms"] > 0 and math.isnan(r["fwdbwd_ms"]) and math.isnan(r["checks_us"])
            continue
        assert r["fwd_ms"] > 0 and r["max_rel_err"] < 1e-4
        assert math.isfinite(r["checks_us"]) == (r["backend"] in OURS)
        assert math.isfinite(r["bw_frac_fwd"]) and math.isnan(r["bw_frac_fwdbwd"])  # no bytes_fwdbwd
        for comp in ("reference", "baseline"):
            runs = r[f"speedup_{comp}_fwd_runs"]
            assert (
                len(runs) == 3
                and r[f"speedup_{comp}_fwd_min"] == min(runs)
                and r[f"speedup_{comp}_fwd_max"] == max(runs)
            )
        if r["workload"] == "T1":
            assert r["fwdbwd_ms"] > 0 and math.isfinite(r["speedup_baseline_fwdbwd"])
        else:  # an op without backward: forward only
            assert math.isnan(r["fwdbwd_ms"]) and math.isnan(r["speedup_reference_fwdbwd"])
            assert math.isfinite(r["speedup_baseline_fwd"])


class _FloatDtypes(TorchDispatchMode):
    """The dtypes of every floating-point tensor an op produces inside the block."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.seen.add(t.dtype)
        return out


@pytest.mark.parametrize("key", [c.key for c in bench_cases.CASES if "cpu" in c.devices and c.small])
def test_comparisons_run_in_the_row_dtype(key):
    """Like for like: the timed reference and the baseline of every row compute in the row's dtype
    (forward and backward), on its small input: no float64 reference timed against float32. The
    row's dtype is float32, or the case's compute_dtypes where our kernels compute in more
    (distance_transform's exact float64)."""
    case = bench_cases.find(*key.split(":"))
    inp = case.small(CPU)
    for name in ("reference", "baseline"):
        if case.loss:
            case.loss(case.run(inp, name), inp)  # the loss's fixed weights are made on the first call
        with _FloatDtypes() as mode:
            out = case.run(inp, name)
            if case.loss:
                torch.autograd.grad(case.loss(out, inp), inp.grad)
        assert mode.seen and mode.seen <= case.compute_dtypes, f"{name}: {mode.seen}"


def test_checks_off_restores_setting():
    pk.set_checks(False)
    try:
        with pk.use_checks(True):
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
    assert "W2-baseline" in ids
    (mark,) = [m for m in fwd_bwd.pytestmark if m.name == "parametrize"]
    assert [p.id for p in mark.args[1]] == ids  # region_stats has a backward


def test_pytest_benchmark_files_run():
    r = subprocess.run(
        # Every file runs (the glue is pytest_glue.py's, the same for all): every row of our
        # backends, the reference, the baseline and the peers installed, each call once, on the
        # rows' small inputs (PIXELKERNELS_BENCH_INPUTS=small: ~5 s, where our rows alone at the
        # paper sizes took ~60 s of CI, and the others only at W2). bench_models.py's training
        # steps are left out: their glue, training_step, runs in tests/test_models.py.
        [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
         "-k", "not model_step"],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "PIXELKERNELS_BENCH_INPUTS": "small"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert " passed" in r.stdout


def test_cpu_peak_memory_in_a_fresh_interpreter():
    case = bench_cases.find("region_stats", "W2")
    mib = memory.peak_mib(case, None, "cpu" if HAS_CPU else "reference", CPU)
    assert 0 < mib < 1024


def _row(backend, runs=1, **speedups):
    row = {"op": "o", "workload": "w", "shape": "s", "backend": backend, "runs": runs, "fwd_ms": 1.0,
           "fwdbwd_ms": 2.0, "bw_frac_fwd": 0.5, "bw_frac_fwdbwd": float("nan")}  # fmt: skip
    for key, vals in speedups.items():
        row[key] = sorted(vals)[len(vals) // 2]
        row[key + "_min"], row[key + "_max"], row[key + "_runs"] = min(vals), max(vals), list(vals)
    return row


def test_report_helpers(tmp_path):
    assert timing.percentiles([float(x) for x in range(1, 11)]) == (5.5, 2.8, 8.2)
    assert math.isnan(timing.percentiles([])[0])
    with pytest.raises(KeyError, match="no bench case"):
        bench_cases.find("region_stats", "W99")
    with pytest.raises(ValueError, match="loss=None"):
        bench_cases.weighted_sum(torch.zeros(3), Inputs(args=()))
    table = report.Table(CPU, bench_cases.select(["region_stats"], ["W2"], "cpu"))
    assert not any(key.startswith("graph") for _, key, _, _ in table.cols)
    assert "x ref f+b" in table.header() and "x base f+b" in table.header()
    empty = {"op": "o", "workload": "w", "backend": "b"}
    assert table.line(empty).split() == ["o", "w", "b"] + ["-"] * (len(table.cols) - 3)
    many = _row("cpu", runs=3, speedup_baseline_fwdbwd=[4.0, 6.5, 5.25])
    assert report.speedup_cell(many, "speedup_baseline_fwdbwd") == "5.2 (4.0-6.5)"
    assert report.speedup_cell(_row("cpu", speedup_reference_fwd=[12.25]), "speedup_reference_fwd") == "12.2"
    rows = [_row("reference", speedup_reference_fwd=[1.0]), many | {"peer_only": 1}]
    report.write_csv(str(tmp_path / "r.csv"), rows)
    with open(tmp_path / "r.csv") as f:
        got = list(csv.DictReader(f))
    assert got[0]["peer_only"] == "" and got[1]["speedup_baseline_fwdbwd_runs"] == "4 6.5 5.25"
    md = report.markdown(rows).splitlines()
    assert len(md) == 3 and "| cpu |" in md[2] and "5.2 (4.0-6.5)" in md[2]


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from pixelkernels.bench.plot import plot

    rows = [
        _row("reference", speedup_reference_fwdbwd=[1.0], speedup_baseline_fwdbwd=[0.5]),
        _row("baseline", speedup_reference_fwdbwd=[2.0], speedup_baseline_fwdbwd=[1.0]),
        _row(
            "cpu",
            runs=3,
            speedup_reference_fwdbwd=[20.0, 30.0, 25.0],
            speedup_baseline_fwdbwd=[4.0, 6.0, 5.0],
        ),
    ]
    path = tmp_path / "p.png"
    assert plot(rows, str(path), title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# GPU: these run whenever a GPU is lent (the CUDA code paths of the bench).


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_cuda_eager_and_graph(monkeypatch):
    calls = []

    def syncs(inp):  # cannot be captured in a CUDA graph
        emb, labels, r = inp.args
        return pk.region_stats(emb, labels, int(labels.max().item()) + 1, backend="reference")

    monkeypatch.setattr(bench_cases, "CASES", [_recording_case(calls, peers=(Peer("syncs", None, syncs),))])
    lines = []
    rows = bench.run_bench(torch.device("cuda"), memory=True, log=lines.append, budget_s=0.05, repeat=2)
    by = {r["backend"]: r for r in rows}
    for name, r in by.items():
        assert r["fwd_p20_ms"] <= r["fwd_ms"] <= r["fwd_p80_ms"] and r["peak_mib"] >= 0
        if name == "syncs":
            assert math.isnan(r["graph_fwd_ms"]) and "graph capture failed" in r["note"]
        else:
            assert r["graph_fwd_p20_ms"] <= r["graph_fwd_ms"] <= r["graph_fwd_p80_ms"], r
            assert r["graph_fwdbwd_ms"] > 0 and r["note"] == "" and math.isfinite(r["bw_frac_fwd"])
    assert all(not on for tag, b, on in calls if tag == "small")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_failed_capture_leaves_other_graphs_replayable():
    """A capture that fails after drawing random numbers (from the default generator and a
    case's own) between two that succeed: every captured graph replays, and eager draws work
    after (the H200 run of 2026-11-28: is_triplet_loss W1-hard's bench died at a replay with
    "Offset increment outside graph capture")."""
    from pixelkernels.bench import timing

    dev = torch.device("cuda")
    gen = torch.Generator(dev).manual_seed(3)
    x = torch.zeros(1000, device=dev)

    def draws():
        return torch.rand(1000, device=dev) + torch.rand(1000, device=dev, generator=gen) + x

    def draws_then_syncs():
        y = draws()
        return y[y > 0.5].sum().item()  # a host sync: the capture fails here

    fns = {"a": draws, "bad": draws_then_syncs, "b": draws}
    times, notes = timing.graph_samples(fns, dev, budget_s=0.01, flush=timing.cache_flush_buffer(dev),
                                        generators=(gen,))  # fmt: skip
    assert set(notes) == {"bad"} and all(times[n] for n in ("a", "b")), (times, notes)
    torch.cuda.synchronize(dev)
    assert draws().shape == (1000,)


def test_model_gpu(capsys):
    """--model-gpu prints each row's H100 floor without a GPU: bytes at 3.35 TB/s, FLOPs at peak."""
    from pixelkernels.bench import cli, gpu_model

    assert cli.main(["--model-gpu", "--op", "center_distance"]) == 0
    out = capsys.readouterr().out
    assert "H100 us f+b" in out and "center_distance" in out
    assert gpu_model.floor_us(3.35e12) == pytest.approx(1e6)
    assert gpu_model.floor_us(0, 67e12) == pytest.approx(1e6)
    assert gpu_model.floor_us(0, 989e12, tensor_cores=True) == pytest.approx(1e6)


def test_predict_us_little_law():
    """A grid too small to keep enough loads in flight is latency-bound, a full one runs at the
    copy rate; a launch costs its minimum either way (bench/gpu_model.py's formula)."""
    from pixelkernels.bench import gpu_model

    gpu = gpu_model.GPUS["h100"]
    fact = {"occupancy": 1.0, "bytes_in_flight": 16}
    big = {"blocks": 10_000, "threads": 256, "read": 10**9, "written": 0}
    # 132 SMs x 2048 threads x 16 B in flight over 600 ns: 7.2 TB/s > copy: bandwidth-bound
    assert gpu_model.predict_us(big, fact, gpu) == pytest.approx(1.0 + 1e9 / 2.83e12 * 1e6)
    small = {**big, "blocks": 9}  # 9 SMs x 256 threads x 16 B / 600 ns: 61 GB/s
    assert gpu_model.predict_us(small, fact, gpu) == pytest.approx(1.0 + 1e9 * 600e-9 / (9 * 256 * 16) * 1e6)
    assert gpu_model.predict_us(small, None, gpu) == gpu_model.predict_us(big, fact, gpu)  # no facts: streaming
    assert gpu_model.predict_us({**big, "read": 0}, fact, gpu) == pytest.approx(1.0)
    # fill: 8 resident blocks of 256 threads an SM at occupancy 1, so 9 blocks fill 9 of 1056 slots
    assert gpu_model.fill(small, fact, gpu) == pytest.approx(9 / 1056) and gpu_model.fill(big, fact, gpu) == 1.0


def test_model_gpu_kernels_masked_sum(emu, tmp_path):
    """bench --model-gpu --kernels: masked_sum W2's kernels, emulated with a GPU's grids, move
    the row's minimal bytes within 1 % (its traffic model is what its kernels do); a GPU run's
    per-kernel times (--measured) land next to the prediction, summed per row."""
    import json

    from pixelkernels.bench import cli, gpu_model

    rows = gpu_model.kernel_rows(["masked_sum"], ["W2"], facts={}, emu=emu)
    total, launches = rows[0], rows[1:]
    assert total["kernel"] == "(all)" and total["launches"] == len(launches)
    kernels = [r for r in launches if r["blocks"]]
    names = [r["kernel"] for r in kernels]
    assert any("partials_kernel" in n for n in names) and any("backward_kernel" in n for n in names), names
    moved = sum(r["read"] + r["written"] for r in kernels)
    assert total["minimal"] <= moved <= 1.01 * total["minimal"], (moved, total["minimal"])
    assert max(r["blocks"] for r in kernels) >= 132  # launched as on an H100, not the emulator's 3 blocks
    assert emu.traffic(False) == ""  # recording ended with the call
    measured = [{"op": "masked_sum", "workload": "W2", "backend": "cuda", "kernel": names[0], "us": 10.0},
                {"op": "masked_sum", "workload": "W2", "backend": "cuda", "kernel": "(all)", "us": 99.0}]
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps({"meta": {}, "rows": measured}))
    out = tmp_path / "model.json"
    assert cli.main(["--model-gpu", "--kernels", "--op", "masked_sum", "--workload", "W2", "--sass-facts",
                     str(tmp_path / "none.json"), "--measured", str(path), "--json", str(out)]) == 0  # fmt: skip
    got = json.loads(out.read_text())["rows"]
    assert got[0]["measured_us"] == 10.0 and got[0]["ratio"] == pytest.approx(10.0 / got[0]["predicted_us"])
    assert sum(r.get("measured_us", 0) for r in got[1:]) == pytest.approx(10.0)


def test_host_mode_rows():
    """bench --host (bench/host.py): host time in tiny-add units, ATen ops and syncs per call,
    next to the baseline; the pixelkernels backend syncs nowhere."""
    from pixelkernels.bench import host

    rows = host.host_rows(["region_stats"], ["W2"], ["cpu"], budget_s=0.005, log=lambda *_: None)
    by = {r["backend"]: r for r in rows}
    assert set(by) == {"cpu", "baseline", "reference"}
    assert by["cpu"]["syncs"] == 0 and by["cpu"]["aten_ops"] > 0 and by["cpu"]["host_u"] > 0
    assert by["baseline"]["vs_baseline"] == 1.0 and by["baseline"]["cuda_launches"] is None
    assert "| region_stats | W2 | fwdbwd | cpu |" in host.markdown(rows)
    if host.load_emulator() is not None:  # the CUDA path: forward and backward kernels, the loss's ops
        assert by["cpu"]["cuda_launches"] >= 2 + 1
        # the op's own: the forward's one kernel (partials, which also check the labels, merged
        # by its last block per image), the backward's one (issue 36 part 3: <= 4)
        assert by["cpu"]["cuda_launches"] - by["cpu"]["loss_ops"] == 2
    calls = []
    with host.on_host_syncs(calls.append):
        torch.ones(2).sum().item()
        bool(torch.ones(1))
    assert calls == ["Tensor.item", "Tensor.__bool__"] and not pk._checks._ASYNC_ON_CPU


def test_host_mode_counts_the_launchers_aten_ops():
    """The CUDA path's count sees the ATen ops a launcher's C++ side dispatches (each a launch on
    a GPU), not only the emulator's kernels: pair_bce_backward sums its rows' two partials with
    two at::sum."""
    from pixelkernels.bench import host

    emu = host.load_emulator()
    if emu is None:
        pytest.skip("no CUDA emulator (no CUDA headers)")
    x, y = torch.randn(1, 5, 3), torch.randn(1, 4, 3)
    xl, yl = torch.randint(0, 2, (1, 5)), torch.randint(0, 2, (1, 4))
    one = torch.ones(1)

    def step():
        torch.ops.pixelkernels.pair_bce_backward(torch.ones(1, 5), x, xl, y, yl, one, one)

    step()
    total = host.cuda_launches_per_call(step, emu)
    before = int(emu.launch_count())
    host.cuda_launches_per_call(step, emu)  # two emulated calls (one uncounted first)
    kernels = (int(emu.launch_count()) - before) // 2
    assert total == 1 + kernels + 2  # ones, the kernels, the two sums



def test_host_mode_counts_the_copies_of_view_ops():
    """``contiguous``, ``reshape`` and ``to`` are views by their schema but copy where no view
    can express the result: counted then (a D-major map made contiguous, a float32 gradient
    widened to float64 is each a launch on a GPU), not where they return their input."""
    from pixelkernels.bench import host

    x = torch.randn(2, 3, 4)
    t = x.transpose(1, 2)
    assert host.ops_per_call(lambda: (x.contiguous(), x.reshape(6, 4), x.to(torch.float32))) == 0
    assert host.ops_per_call(lambda: t.contiguous()) == 1
    assert host.ops_per_call(lambda: t.reshape(2, 12)) == 1
    assert host.ops_per_call(lambda: x.to(torch.float64)) == 1

@pytest.mark.triton
@pytest.mark.skipif("triton" not in pk.available_backends(), reason="triton not usable here")
def test_host_mode_counts_the_triton_path():
    """The triton row's launches: Triton kernels (the interpreter's own copies are not launches)
    plus ATen ops, the Triton variants' glue inside their custom ops included."""
    from pixelkernels.bench import host

    rows = host.host_rows(["region_stats"], ["W2"], ["triton"], budget_s=0.005, log=lambda *_: None)
    by = {r["backend"]: r for r in rows}
    # check_values, the forward's two kernels (partials, merge), the backward's one, the loss's ops
    assert by["triton"]["triton_launches"] >= 1 + 2 + 1 + 1 and by["triton"]["cuda_launches"] is None
    assert by["triton"]["triton_launches"] - by["triton"]["loss_ops"] == 4  # check, partials + merge, backward
    assert by["baseline"]["triton_launches"] is None
    n = 0

    def two_kernels():
        nonlocal n
        n += 1
        e = torch.randn(1, 2, 3, 4)
        pk.region_stats(e, torch.zeros(1, 3, 4, dtype=torch.long), 2, backend="triton")

    two_kernels()
    with pk.use_checks("off"):
        assert host.triton_launches_per_call(two_kernels) == 2 + 2  # the kernels, randn and zeros


def test_default_rows_are_one_per_family_and_run_on_both_devices():
    """`bench` without --op/--workload/--full runs exactly cases.REPRESENTATIVE (issue 39 item 8),
    one row per op family, each on the CPU and on CUDA."""
    ops, ids = bench_cases.representative()
    rows = bench_cases.select(ops, ids)
    assert sorted(c.key for c in rows) == sorted(bench_cases.REPRESENTATIVE)
    families = {"is_triplet_loss", "region_stats", "label_transfer", "distance_transform"}
    assert families <= {c.op for c in rows}
    assert all({"cpu", "cuda"} <= set(c.devices) for c in rows)


def test_kernels_profile_one_step_per_backend():
    """`bench --kernels` (bench/kernels.py): per backend, a "(all)" row with the step's total,
    then its kernels by time (on the CPU: ATen and pixelkernels ops by self time), shares <= 1."""
    from pixelkernels.bench import kernels

    rows = kernels.kernel_rows(["region_stats"], ["W2"], None, "cpu", top=5)
    by = collections.defaultdict(list)
    for r in rows:
        by[r["backend"]].append(r)
    assert set(by) == set(OURS)
    for backend, rs in by.items():
        assert rs[0]["kernel"] == "(all)" and rs[0]["share"] == 1.0 and rs[0]["us"] > 0, backend
        assert 1 <= len(rs) - 1 <= 5 and sum(r["share"] for r in rs[1:]) <= 1.0 + 1e-3
        assert [r["us"] for r in rs[1:]] == sorted((r["us"] for r in rs[1:]), reverse=True)
    assert "| region_stats | W2 |" in kernels.markdown(rows) and "(all)" in kernels.format_row(rows[0])
