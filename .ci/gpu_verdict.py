"""The GPU verdict in one call (issue 38): `bash .ci/gpu verdict`, the default of .ci/gpu.

Stages in order of value, each with its own deadline, so a slow stage cannot starve the next;
each writes its results as it goes, so a run cut short still returns everything done so far:

  setup        install the kit (.gpukit/, `make gpu-kit`): the prebuilt CUDA wheel, test wheels
  smoke        build facts; one call of every op variant, forward and backward, on cuda and
               triton, float32 and bfloat16, against the reference (.ci/gpu_smoke.py)
  correctness  pytest on the GPU (the tests marked cuda): first the priority group (every contract
               row on cuda and triton against the reference in every dtype, gradcheck, CUDA-graph
               capture, side streams, the GPU shapes, determinism, the adversarial regressions the
               first GPU run failed), then the other cuda tests, time allowing
  bench        the host probe, then bench --kernels (device time per kernel of KERNEL_ROWS, the
               slow rows), then python -m pixelkernels bench, op by op in the SPEC's workload
               order (each op at most twice its fair share of the time left), eager and graph
               replay, cuda, triton, the baseline and the reference; then bench --models
  sanitize     compute-sanitizer memcheck, racecheck and initcheck around gpu_smoke (every CUDA
               kernel, forward and backward, float32 and bfloat16); NOT RUN where the machine
               refuses the sanitizer

At most 8 files land in OUT ($OUT, else build/gpu-results): verdict.txt (the table, printed last
too), verdict.json (stages, times, device, build facts, smoke and sanitizer calls), tests.json
(every test's outcome), bench.json, models.json and logs.tar.gz (every log).

    python .ci/gpu_verdict.py [--budget 480] [--only STAGE ...] [--bench-ops OP,OP] [--no-models]
                                         --only: the budget is shared among those stages;
                                         --bench-ops: the bench stage for these ops, in order
    python .ci/gpu_verdict.py --dry      the rehearsal on a machine without a GPU (CI): the same
                                         orchestration with the stages pointed at the CPU, the
                                         Triton interpreter and the emulated CUDA kernels
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILES = 8

# The priority group of the correctness stage: what SPEC and the issue name first.
PRIORITY = ("backends_agree or awkward_inputs or gradcheck or gpu_cuda_graph or side_stream or gpu_shapes "
            "or deterministic_bitwise or adversarial or capture or no_sync")  # fmt: skip

# Each stage's share of the budget (seconds at the default 480).
# smoke 90 s: on the H100 of 2026-11-26 its Triton JIT compiles alone took ~50 s (similarity_reduce
# 18.5 s, label_transfer 12.4 s) and a 60 s smoke was cut; correctness then finds them cached.
DEADLINES = {"setup": 30, "smoke": 90, "correctness": 210, "bench": 100, "sanitize": 50}

# The rows whose kernels the bench stage profiles first (`bench --kernels`, at most KERNELS_S of
# its time): the H100 run of 2026-11-27 timed them at 6x (label_transfer W5 backward) and 16x
# (prior_mask W7) the baseline without saying which kernel took the time. W5-eq3: class_scores'
# kernels (its float64 tiles and merge, 2026-11-29), never yet timed on a GPU. The W2 rows: the
# per-kernel times `bench --model-gpu --kernels --measured logs/kernels.json` sets against its
# prediction (benchmarks/results/model_gpu_kernels_2026-12-01.md).
KERNEL_ROWS = (("label_transfer", "W5"), ("label_transfer", "W5-eq3"), ("prior_mask", "W7"),
               ("dense_similarity_loss", "W6b"), ("is_triplet_loss", "W1-hard"), ("masked_sum", "W2"),
               ("region_stats", "W2"), ("menet_metric_loss", "W2"), ("center_distance", "W2"),
               ("pixel_normalize", "W2"))  # fmt: skip
KERNELS_S = 35.0


@dataclasses.dataclass
class Stage:
    name: str
    status: str = "not run"  # passed, failed, cut (its deadline), not run (with why)
    seconds: float = 0.0
    passed: int = 0
    failed: int = 0
    why: str = ""


class Verdict:
    def __init__(self, out: Path, dry: bool, budget: float, stages=None, bench_ops=None, models=True):
        self.out, self.dry, self.budget = out, dry, budget
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stages: dict[str, Stage] = {n: Stage(n) for n in DEADLINES}
        self.facts: dict = {"dry": dry, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        self.t0 = time.monotonic()
        # the budget shared among the stages that run (--only bench: the whole budget is bench's)
        self.scale = budget / sum(d for n, d in DEADLINES.items() if stages is None or n in stages)
        self.bench_ops, self.models = bench_ops, models

    # --- running things ------------------------------------------------------------------------

    def deadline(self, name: str) -> float:
        """The stage's seconds: its share of the budget, never past what is left of it."""
        left = self.budget - (time.monotonic() - self.t0)
        return max(1.0, min(DEADLINES[name] * self.scale, left))

    def run(self, cmd: list[str], log: str, timeout: float, env: dict | None = None) -> tuple[int | None, float]:
        """cmd with its output to logs/<log>: (exit status, or None when cut at `timeout`, seconds).
        A cut sends SIGINT first (pytest then writes its reports), SIGKILL 15 s later."""
        t0 = time.monotonic()
        with open(self.logs / log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})},
                                 start_new_session=True)  # fmt: skip
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGINT)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                rc = None
                f.write(f"\n== cut at its deadline ({timeout:.0f} s)\n")
        return rc, time.monotonic() - t0

    def stage(self, name: str, fn) -> None:
        st = self.stages[name]
        t0 = time.monotonic()
        print(f"== {name} (deadline {self.deadline(name):.0f} s)", flush=True)
        try:
            fn(st)
        except Exception as e:  # noqa: BLE001 - a broken stage is reported, the next one runs
            st.status, st.why = "failed", f"{type(e).__name__}: {e}"
        st.seconds = round(time.monotonic() - t0, 1)
        print(f"   {st.status} in {st.seconds:.0f} s {st.why}", flush=True)
        self.write()

    # --- results ---------------------------------------------------------------------------------

    def table(self) -> str:
        lines = [f"{'stage':<12} {'verdict':<8} {'passed':>7} {'failed':>7} {'seconds':>8}  why"]
        for st in self.stages.values():
            lines.append(f"{st.name:<12} {st.status:<8} {st.passed:>7} {st.failed:>7} {st.seconds:>8.0f}  {st.why}")
        total = time.monotonic() - self.t0
        bad = [s.name for s in self.stages.values() if s.status in ("failed", "cut")]
        lines.append(f"verdict: {'FAILED (' + ', '.join(bad) + ')' if bad else 'passed'} in {total:.0f} s"
                     f"{' (dry run: no GPU)' if self.dry else ''}")  # fmt: skip
        return "\n".join(lines)

    def write(self) -> None:
        """verdict.json and verdict.txt, rewritten after every stage (a cut run keeps them)."""
        data = {"facts": self.facts, "stages": [dataclasses.asdict(s) for s in self.stages.values()]}
        (self.out / "verdict.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
        (self.out / "verdict.txt").write_text(self.table() + "\n")

    def pack_logs(self) -> None:
        with tarfile.open(self.out / "logs.tar.gz", "w:gz") as tar:
            tar.add(self.logs, arcname="logs")
        shutil.rmtree(self.logs)


# ---------------------------------------------------------------------------------------------
# The stages


def python() -> str:
    return sys.executable


def setup(v: Verdict, st: Stage) -> None:
    """The kit's wheels, installed without network or compilation; then the build facts."""
    kit = ROOT / ".gpukit"
    if v.dry:
        st.status, st.why = "passed", "dry: the source tree's build"
    else:
        wheels = sorted(kit.glob("*.whl"))
        if not wheels:
            st.status, st.why = "failed", "no .gpukit/*.whl: run `make gpu-kit` here and carry .gpukit"
            return
        target = Path("/tmp/pk-site")
        rc, _ = v.run([python(), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                       "--target", str(target), "--upgrade", *map(str, wheels)], "setup.log", v.deadline("setup"))  # fmt: skip
        if rc != 0:
            st.status, st.why = "failed", f"pip install of the kit: exit {rc}"
            return
        # Every later stage (and its subprocesses) imports the installed wheel, never the source tree.
        os.environ["PYTHONPATH"] = str(target)
        os.environ["PYTHONSAFEPATH"] = "1"
        st.passed, st.status = len(wheels), "passed"
    probe = ("import json, torch, pixelkernels as pk; i = pk.build_info(); "
             "i['device'] = torch.cuda.get_device_name() if torch.cuda.is_available() else None; "
             "i['torch_full'] = torch.__version__; i['file'] = pk.__file__; print(json.dumps(i))")  # fmt: skip
    r = subprocess.run([python(), "-c", probe], capture_output=True, text=True, cwd="/", timeout=120)
    (v.logs / "setup.log").open("a").write(r.stdout + r.stderr)
    if r.returncode != 0:
        st.status, st.why = "failed", "import pixelkernels failed (logs/setup.log)"
        return
    v.facts["build_info"] = json.loads(r.stdout.strip().splitlines()[-1])
    if not v.dry and "cuda" not in v.facts["build_info"]["backends"]:
        st.status, st.why = "failed", f"no cuda backend: {v.facts['build_info'].get('extension_error')}"
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60)
        (v.logs / "device.txt").write_text(r.stdout + r.stderr)
    v.facts["host"] = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def smoke(v: Verdict, st: Stage) -> None:
    out = v.logs / "smoke.jsonl"
    cmd = [python(), str(ROOT / ".ci" / "gpu_smoke.py"), "--json", str(out)] + (["--dry"] if v.dry else [])
    rc, _ = v.run(cmd, "smoke.log", v.deadline("smoke"))
    calls = _jsonl(out)
    v.facts["smoke"] = calls
    st.passed, st.failed = sum(c["ok"] for c in calls), sum(not c["ok"] for c in calls)
    st.status = "cut" if rc is None else "passed" if rc == 0 and not st.failed else "failed"
    if rc not in (0, 1, None):
        st.why = f"exit {rc} (logs/smoke.log)"


def _junit(path: Path) -> list[dict]:
    """Each test case of a pytest junit report: {"test", "outcome", "seconds", "message"}."""
    if not path.exists():
        return []
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return []
    out = []
    for tc in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:300]
        out.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "outcome": outcome,
                    "seconds": float(tc.get("time") or 0), "message": message})  # fmt: skip
    return out


def _pytest_args(workers: int) -> list[str]:
    args = [python(), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
    have = lambda m: subprocess.run([python(), "-c", f"import {m}"], capture_output=True).returncode == 0  # noqa: E731
    if workers > 1 and have("xdist"):
        args += ["-n", str(workers)]
    if have("pytest_timeout"):
        args += ["--timeout", "120"]
    return args


FIRST = ROOT / ".ci" / "gpu_first.txt"


def _first_tests() -> list[str]:
    """The node ids of .ci/gpu_first.txt (one a line, # comments) that still exist: the tests
    the correctness stage runs first (they run again in their group: a few seconds)."""
    if not FIRST.exists():
        return []
    ids = [ln.split("#")[0].strip() for ln in FIRST.read_text().splitlines()]
    return [i for i in ids if i and (ROOT / i.split("::")[0]).exists()]


def correctness(v: Verdict, st: Stage) -> None:
    if v.dry:  # the orchestration only: a small group of emulated and interpreter tests
        groups = [("priority", ["tests/test_pixel_normalize.py", "-k", "backends_agree or emulated"]),
                  ("rest", ["tests/test_masked_sum.py", "-k", "gradcheck"])]  # fmt: skip
    else:
        sel = ["tests", "-m", "cuda and not slow and not emulated"]
        groups = [("priority", sel + ["-k", PRIORITY]), ("rest", sel + ["-k", f"not ({PRIORITY})"])]
        first = _first_tests()
        if first:  # what the last lease failed and the GPU tests written since: before the rest
            groups.insert(0, ("first", [*first, "-m", "cuda and not slow and not emulated"]))
    end = time.monotonic() + v.deadline("correctness")
    results, cut = [], False
    for name, sel in groups:
        left = end - time.monotonic()
        if left < 10:
            cut = True
            break
        xml = v.logs / f"tests-{name}.xml"
        # PIXELKERNELS_EMU=0: conftest would build and load tests/cuda_emu (the CUDA kernels compiled
        # for the CPU: minutes on a fresh machine, and a checking allocator under every CPU tensor)
        env = {} if v.dry else {"PIXELKERNELS_EMU": "0"}
        rc, _ = v.run([*_pytest_args(2 if v.dry else 12), "--junitxml", str(xml), *sel], f"tests-{name}.log", left, env)
        got = _junit(xml)
        for r in got:
            r["group"] = name
        results += got
        if rc is None:
            cut = True
            break
        if rc not in (0, 1, 5):
            st.why = f"pytest exit {rc} in group {name} (logs/tests-{name}.log)"
    (v.out / "tests.json").write_text(json.dumps(results, indent=0) + "\n")
    st.passed = sum(r["outcome"] == "passed" for r in results)
    st.failed = sum(r["outcome"] in ("failed", "error") for r in results)
    st.status = "cut" if cut else "failed" if st.failed or st.why else "passed"
    if cut:
        st.why = st.why or f"deadline: {len(results)} tests reported before it"


def bench(v: Verdict, st: Stage) -> None:
    """First the host probe (.ci/gpu_host_probe.py: what a launch, a Triton launch's pointer
    checks and an autograd round trip cost on this machine, the floor under eager-vs-graph),
    then op by op, so a cut keeps every finished op's rows; then the models' training steps."""
    end = time.monotonic() + v.deadline("bench")
    device = "cpu" if v.dry else "cuda"
    if not v.dry:
        probe = v.logs / "host_probe.jsonl"
        v.run([python(), str(ROOT / ".ci" / "gpu_host_probe.py"), "--json", str(probe)], "bench.log",
              min(20.0, max(1.0, end - time.monotonic())))  # fmt: skip
        v.facts["host_probe"] = _jsonl(probe)
        if not v.bench_ops:  # a call naming its ops is a rerun for the rows a first one cut
            args = [x for op, w in KERNEL_ROWS for x in ("--op", op, "--workload", w)]
            v.run([python(), "-m", "pixelkernels", "bench", "--kernels", "--device", device, *args,
                   "--json", str(v.logs / "kernels.json")], "kernels.log",
                  min(KERNELS_S * v.scale, max(1.0, end - time.monotonic())))  # fmt: skip
    listed = subprocess.run([python(), "-m", "pixelkernels", "bench", "--list"], capture_output=True, text=True,
                            cwd=ROOT)  # fmt: skip
    cases = [line.split()[0].split(":") for line in listed.stdout.splitlines() if ":" in line]
    ops = list(dict.fromkeys(op for op, _ in cases))
    if v.bench_ops:  # the ops asked for, in their order (a second call for those a first one cut)
        unknown = [op for op in v.bench_ops if op not in ops]
        if unknown:
            st.status, st.why = "failed", f"no bench case for {', '.join(unknown)}"
            return
        ops = list(v.bench_ops)
    narrow = []
    if v.dry:  # the orchestration only: the table's first case
        ops, narrow = ops[:1], ["--workload", cases[0][1]]
    meta, rows, done, partial = None, [], [], []
    for k, op in enumerate(ops):
        left = end - time.monotonic()
        if left < 5:
            break
        # A fair share: at most twice the time left over the ops still to run (at least 20 s), so
        # one heavy op cannot starve the rest (prior_mask's W7-C512 took 128 s of a 224 s stage on
        # the H100 of 2026-11-27); the bench rewrites its --json after each case, so a cut op
        # keeps its finished rows.
        share = min(left, max(20.0, 2 * left / (len(ops) - k)))
        path = v.logs / f"bench-{op}.json"
        rc, _ = v.run([python(), "-m", "pixelkernels", "bench", "--device", device, "--op", op, "--quick",
                       "--json", str(path), *narrow], "bench.log", share)  # fmt: skip
        data = json.loads(path.read_text()) if path.exists() else {}
        meta = meta or data.get("meta")
        rows += data.get("rows", [])
        if rc == 0 and path.exists():
            done.append(op)
            st.passed += 1
        elif rc is None:
            if data.get("rows"):
                partial.append(op)
        else:
            st.failed += 1
        (v.out / "bench.json").write_text(
            json.dumps({"meta": meta, "ops": done, "partial_ops": partial, "rows": rows}, default=str) + "\n"
        )
    left = end - time.monotonic()
    models_done = False
    if left > 20 and not v.dry and v.models:
        rc, _ = v.run([python(), "-m", "pixelkernels", "bench", "--models", "--json", str(v.out / "models.json")],
                      "bench.log", left)  # fmt: skip
        models_done = rc == 0
    missing = [op for op in ops if op not in done and op not in partial]
    st.status = "failed" if st.failed else "cut" if missing or partial else "passed"
    st.why = "; ".join(
        filter(None, [f"cut with some rows: {', '.join(partial)}" if partial else "",
                      f"not reached: {', '.join(missing)}" if missing else ""])  # fmt: skip
    ) + (
        "" if models_done or v.dry or not v.models else "; models not run")


def sanitize(v: Verdict, st: Stage) -> None:
    if v.dry:
        st.status, st.why = "not run", "dry: no GPU (the emulated kernels ran under tests/cuda_emu's sanitizer in smoke)"
        return
    tool = shutil.which("compute-sanitizer") or str(Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "compute-sanitizer")
    end = time.monotonic() + v.deadline("sanitize")
    probe, _ = v.run([tool, "--tool", "memcheck", "--error-exitcode", "1", python(), "-c",
                      "import torch; torch.ones(1, device='cuda').sum().item()"], "sanitize.log", 60)  # fmt: skip
    if probe != 0:
        text = (v.logs / "sanitize.log").read_text()
        st.status = "not run" if "not supported" in text.lower() or probe is None else "failed"
        st.why = "compute-sanitizer refused this machine" if st.status == "not run" else "the sanitizer's probe failed"
        return
    env = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    results = {}
    for kind in ("memcheck", "racecheck", "initcheck"):
        left = end - time.monotonic()
        if left < 5:
            results[kind] = "not reached"
            continue
        out = v.logs / f"sanitize-{kind}.jsonl"
        rc, _ = v.run([tool, "--tool", kind, "--error-exitcode", "3", python(), str(ROOT / ".ci" / "gpu_smoke.py"),
                       "--backend", "cuda", "--json", str(out)], f"sanitize-{kind}.log", left, env)  # fmt: skip
        results[kind] = {None: "cut", 0: "clean", 3: "REPORTED"}.get(rc, f"exit {rc}")
    v.facts["sanitize"] = results
    st.passed = sum(r == "clean" for r in results.values())
    st.failed = sum(r not in ("clean", "cut", "not reached") for r in results.values())
    st.status = "failed" if st.failed else "cut" if st.passed < len(results) else "passed"
    st.why = ", ".join(f"{k} {r}" for k, r in results.items())


STAGES = {"setup": setup, "smoke": smoke, "correctness": correctness, "bench": bench, "sanitize": sanitize}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, help="seconds in all (default 480; --dry: 1440, the CPU being slower at"
                   " the same stages and CI's machine shared)")  # fmt: skip
    p.add_argument("--dry", action="store_true", help="rehearse without a GPU")
    p.add_argument("--only", action="append", choices=list(STAGES), help="run only these stages (setup always)")
    p.add_argument("--bench-ops", help="comma-separated ops for the bench stage, in this order (default: every op)")
    p.add_argument("--no-models", action="store_true", help="the bench stage without bench --models")
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "build" / "gpu-results"))
    a = p.parse_args(argv)
    if a.budget is None:
        a.budget = float(sum(DEADLINES.values())) * (3 if a.dry else 1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():  # a fresh folder: at most 8 files come back
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    if a.dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    stages = None if not a.only else {"setup", *a.only}
    bench_ops = [op for op in (a.bench_ops or "").split(",") if op]
    v = Verdict(out, a.dry, a.budget, stages, bench_ops or None, not a.no_models)
    for name, fn in STAGES.items():
        if name != "setup" and a.only and name not in a.only:
            v.stages[name].why = "not asked for"
            continue
        if name != "setup" and v.stages["setup"].status == "failed":
            v.stages[name].why = "setup failed"
            continue
        v.stage(name, lambda st, fn=fn: fn(v, st))
    v.write()
    v.pack_logs()
    files = sorted(f.name for f in out.iterdir())
    assert len(files) <= MAX_FILES and all(f.is_file() for f in out.iterdir()), files
    print(f"files in {out}: {', '.join(files)}")
    print(v.table())
    return 0 if all(s.status in ("passed", "not run") for s in v.stages.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
