"""The GPU verdict's orchestration (.ci/gpu_verdict.py, issue 38), without a GPU: deadlines cut a
stage and the next one still runs, a cut or broken stage keeps what it wrote, at most 8 files
come back, and the verdict table is what the run prints last. The stages themselves are faked
here; `python .ci/gpu_verdict.py --dry` (a CI step) rehearses the real ones on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gv(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_verdict_under_test", ROOT / ".ci" / "gpu_verdict.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def _sleeper(seconds: float, then: str = "") -> list[str]:
    """A child that sleeps, and on SIGINT (the cut's first signal) writes `then` and exits 2,
    as pytest writes its reports when interrupted."""
    code = (f"import time, sys\ntry:\n    time.sleep({seconds})\nexcept KeyboardInterrupt:\n"
            f"    print({then!r}, flush=True)\n    sys.exit(2)\n")  # fmt: skip
    return [sys.executable, "-c", code]


def _fake_stages(gv, calls):
    def setup(v, st):
        calls.append("setup")
        st.status = "passed"

    def smoke(v, st):  # runs past its deadline
        calls.append("smoke")
        rc, _ = v.run(_sleeper(60, "interrupted: report written"), "smoke.log", v.deadline("smoke"))
        st.status = "cut" if rc is None else "passed"

    def correctness(v, st):  # fails outright
        calls.append("correctness")
        (v.out / "tests.json").write_text("[]\n")
        raise RuntimeError("a broken stage")

    def bench(v, st):
        calls.append("bench")
        (v.out / "bench.json").write_text(json.dumps({"rows": [1]}) + "\n")
        st.status, st.passed = "passed", 1

    def sanitize(v, st):
        calls.append("sanitize")
        st.status, st.why = "not run", "no sanitizer here"

    return {"setup": setup, "smoke": smoke, "correctness": correctness, "bench": bench, "sanitize": sanitize}


def test_a_stage_past_its_deadline_is_cut_and_every_later_stage_still_runs(gv, monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(gv, "STAGES", _fake_stages(gv, calls))
    (tmp_path / "stale.txt").write_text("from an older run")
    t0 = time.monotonic()
    # a budget of 24 s: smoke's share is 24 * 60 / 480 = 3 s
    rc = gv.main(["--dry", "--budget", "24", "--out", str(tmp_path)])
    took = time.monotonic() - t0
    assert rc == 1
    assert calls == ["setup", "smoke", "correctness", "bench", "sanitize"]
    assert took < 20, f"the cut took {took:.0f} s (a 3 s deadline, then SIGINT)"
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bench.json", "logs.tar.gz", "tests.json", "verdict.json", "verdict.txt"]
    assert len(files) <= gv.MAX_FILES and all(p.is_file() for p in tmp_path.iterdir())
    stages = {s["name"]: s for s in json.loads((tmp_path / "verdict.json").read_text())["stages"]}
    assert stages["smoke"]["status"] == "cut"
    assert stages["correctness"]["status"] == "failed" and "a broken stage" in stages["correctness"]["why"]
    assert stages["bench"]["status"] == "passed" and stages["sanitize"]["status"] == "not run"
    # the interrupted child wrote its report before the cut's SIGKILL would have come
    import tarfile

    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        log = tar.extractfile("logs/smoke.log").read().decode()
    assert "interrupted: report written" in log and "cut at its deadline" in log
    # the table is the last thing printed, and the file says the same
    out = capsys.readouterr().out.rstrip().splitlines()
    table = (tmp_path / "verdict.txt").read_text().rstrip().splitlines()
    assert out[-len(table) :][:-1] == table[:-1]  # the last line's total seconds may tick on
    assert out[-1].startswith("verdict: FAILED (smoke, correctness)")


def test_a_failed_setup_skips_the_stages_that_need_it_and_says_why(gv, monkeypatch, tmp_path, capsys):
    calls = []
    stages = _fake_stages(gv, calls)

    def setup(v, st):
        calls.append("setup")
        st.status, st.why = "failed", "no .gpukit/*.whl"

    stages["setup"] = setup
    monkeypatch.setattr(gv, "STAGES", stages)
    assert gv.main(["--dry", "--out", str(tmp_path)]) == 1
    assert calls == ["setup"]
    stages = {s["name"]: s for s in json.loads((tmp_path / "verdict.json").read_text())["stages"]}
    assert all(stages[n]["why"] == "setup failed" for n in ("smoke", "correctness", "bench", "sanitize"))
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("verdict: FAILED (setup)")


def test_only_runs_the_stages_asked_for(gv, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(gv, "STAGES", _fake_stages(gv, calls))
    assert gv.main(["--dry", "--only", "bench", "--out", str(tmp_path)]) == 0
    assert calls == ["setup", "bench"]


def test_deadlines_share_the_budget_and_never_pass_what_is_left(gv, tmp_path):
    v = gv.Verdict(tmp_path, dry=True, budget=240)
    assert v.deadline("correctness") == pytest.approx(gv.DEADLINES["correctness"] / 2, abs=1)  # half the default share
    v.t0 -= 230  # 10 s left
    assert v.deadline("correctness") <= 10.5
    assert sum(gv.DEADLINES.values()) == 480  # eight minutes: one rerun fits the 15 of a lease
    # --only bench: the budget is shared by setup and bench alone
    v = gv.Verdict(tmp_path, dry=True, budget=260, stages={"setup", "bench"})
    share = 260 * gv.DEADLINES["bench"] / (gv.DEADLINES["setup"] + gv.DEADLINES["bench"])
    assert v.deadline("bench") == pytest.approx(share, abs=1)


def test_junit_outcomes(gv, tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite><testcase classname="tests.test_a" name="test_ok" time="0.5"/>'
        '<testcase classname="tests.test_a" name="test_bad" time="1"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_a" name="test_skip" time="0"><skipped message="no GPU"/></testcase>'
        '<testcase classname="tests.test_a" name="test_err" time="0"><error message="fixture"/></testcase>'
        "</testsuite></testsuites>"
    )
    got = {r["test"].split("::")[1]: r["outcome"] for r in gv._junit(xml)}
    assert got == {"test_ok": "passed", "test_bad": "failed", "test_skip": "skipped", "test_err": "error"}
    (tmp_path / "cut.xml").write_text("<testsuites><testsuite><testcase")  # a report cut mid-write
    assert gv._junit(tmp_path / "cut.xml") == [] and gv._junit(tmp_path / "missing.xml") == []


# --- the GPU tables of the site's speed pages (tools/gpu_tables.py) ----------------------------


@pytest.fixture
def tables(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import gpu_tables

    return gpu_tables


def _bench_json(path: Path, device: str, date: str, rows: list[dict], cuda="13.0"):
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": date, "device": device, "build": {"cuda": cuda}}
    path.write_text(json.dumps({"meta": meta, "rows": rows}))


def test_gpu_tables_take_the_newest_gpu_row_and_say_not_measured_otherwise(tables, tmp_path):
    res = tmp_path / "benchmarks" / "results"
    row = {"op": "region_stats", "workload": "W2", "backend": "cuda", "fwdbwd_ms": 9.0, "graph_fwdbwd_ms": 8.0,
           "speedup_baseline_fwdbwd": 1.5, "speedup_reference_fwdbwd": 3.0, "bw_frac_fwdbwd": 0.5}  # fmt: skip
    _bench_json(res / "old.json", "NVIDIA H100", "2026-11-01", [row])
    _bench_json(res / "new" / "bench.json", "NVIDIA H100", "2026-11-20",
                [{**row, "fwdbwd_ms": 2.0, "speedup_baseline_fwdbwd": 4.0, "speedup_baseline_fwdbwd_min": 3.5,
                  "speedup_baseline_fwdbwd_max": 4.5, "speedup_baseline_fwdbwd_runs": [3.5, 4.0, 4.5]}])  # fmt: skip
    _bench_json(res / "cpu.json", "cpu (x86_64)", "2026-11-30", [{**row, "fwdbwd_ms": 1.0}], cuda=None)
    # a newer `bench --kernels` profile of the row: per-kernel times, no timing of the row
    _bench_json(res / "new" / "kernels.json", "NVIDIA H200", "2026-11-28",
                [{"op": "region_stats", "workload": "W2", "backend": "cuda", "kernel": "k", "calls": 1, "us": 5.0}])
    (res / "new" / "verdict.json").write_text(json.dumps(
        {"facts": {"dry": False, "started": "2026-11-20 10:00:00 UTC", "build_info": {"device": "NVIDIA H100"}}}))
    (res / "new" / "tests.json").write_text(json.dumps([
        {"test": "tests.test_region_stats.TestContract::test_a", "outcome": "passed"},
        {"test": "tests.test_region_stats::test_b", "outcome": "failed"},
        {"test": "tests.test_masked_sum::test_c", "outcome": "skipped"}]))  # fmt: skip
    got = tables.bench_rows(res)
    assert got[("region_stats", "W2", "cuda")]["fwdbwd_ms"] == 2.0  # newest GPU run; the CPU one ignored
    text = tables.tables(res)
    lines = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in text.splitlines() if line.startswith("| ")}
    cuda = lines[("region_stats", "W2", "cuda")]
    assert "| 2.000 | 8.000 | 4.00× (3.50–4.50, 3 runs) | 3.00× | 50 % |" in cuda and "2026-11-20" in cuda
    assert "| 50 % | 15.6 |" in cuda  # no copy bandwidth in the row: the floor of the case's traffic model
    assert lines[("region_stats", "W2", "triton")].endswith("| not measured |")
    assert lines[("test_region_stats", "1", "1")].endswith("(`benchmarks/results/new/tests.json`) |")
    assert "| test_masked_sum | 0 | 0 | 1 |" in text
    assert lines[("test_setup", "–", "–")].endswith("| not run by a GPU verdict |")


def test_gpu_tables_floor_is_the_rows_own_traffic_at_h100_rates(tables, tmp_path):
    res = tmp_path / "benchmarks" / "results"
    row = {"op": "region_stats", "workload": "W2", "backend": "cuda", "fwdbwd_ms": 1.0, "graph_fwdbwd_ms": 0.5,
           "bw_frac_fwdbwd": 0.25, "copy_gbs": 2000.0}  # fmt: skip
    _bench_json(res / "a.json", "NVIDIA H100", "2026-11-20", [row])
    # 0.25 of 2000 GB/s for 0.5 ms (graph replay: the CUDA bandwidth column's time) = 250 MB
    want = 250e6 / 3.35e12 * 1e6
    got = next(line for line in tables.tables(res).splitlines() if line.startswith("| region_stats | W2 | cuda |"))
    assert f"| 25 % | {want:.1f} |" in got


def test_gpu_tables_prints_the_tables(tables, capsys):
    assert tables.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**Ops on a GPU**") and "**Tests on a GPU**" in out


def test_bench_gives_each_op_a_fair_share_and_keeps_a_cut_ops_finished_rows(gv, tmp_path):
    """The bench stage (the H100 run of 2026-11-27: one op took 128 s of 224 and a crash in
    another lost its rows): no op gets more than twice the time left over the ops still to
    run, and an op cut at its share keeps the rows its --json holds."""
    ops = ["region_stats", "prior_mask", "label_transfer"]
    v = gv.Verdict(tmp_path, dry=False, budget=300, stages={"setup", "bench"}, bench_ops=ops, models=False)
    shares = {}

    def run(cmd, log, timeout, env=None):
        if "--op" not in cmd:  # the host probe
            return 0, 0.0
        op = cmd[cmd.index("--op") + 1]
        shares[op] = (timeout, v.deadline("bench"))
        path = Path(cmd[cmd.index("--json") + 1])
        if op == "label_transfer":  # a crash before its first case: no file
            return 1, 0.0
        path.write_text(json.dumps({"meta": {"device": "fake"}, "rows": [{"op": op, "workload": "W"}]}))
        return (None if op == "prior_mask" else 0), 0.0

    v.run = run
    st = gv.Stage("bench")
    gv.bench(v, st)
    for k, op in enumerate(ops):
        timeout, left = shares[op]
        assert timeout <= max(20.0, 2 * left / (len(ops) - k)) + 1e-6
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["ops"] == ["region_stats"] and data["partial_ops"] == ["prior_mask"]
    assert [r["op"] for r in data["rows"]] == ["region_stats", "prior_mask"]
    assert st.status == "failed" and st.failed == 1 and "cut with some rows: prior_mask" in st.why


def test_first_tests_are_the_listed_ones_that_exist(gv, tmp_path, monkeypatch):
    """.ci/gpu_first.txt: node ids one a line, comments dropped, files that no longer exist
    left out; the real list names only tests that collect."""
    f = tmp_path / "first.txt"
    f.write_text("# a comment\ntests/test_bench.py::test_x  # why\n\ntests/gone.py::test_y\n")
    monkeypatch.setattr(gv, "FIRST", f)
    assert gv._first_tests() == ["tests/test_bench.py::test_x"]
    monkeypatch.setattr(gv, "FIRST", ROOT / ".ci" / "gpu_first.txt")
    for node in gv._first_tests():
        path, _, name = node.partition("::")
        assert name.split("::")[-1] in (ROOT / path).read_text() or "TestContract" in name, node
