"""`python -m pixelkernels bench [options]`: select the cases, run them (rows.run_bench), write
the JSON / CSV / Markdown / plot. `--help` lists the options."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time

import torch

import pixelkernels as pk

from . import cases as _cases
from . import report
from .rows import Progress, _quiet, default_device, device_name, run_bench
from .timing import NAN, ROUNDS, flush_bytes


# --plot / train --png without matplotlib: said once at the start, not after the run.
PLOT_HINT = "{flag} needs matplotlib: pip install 'pixelkernels[plots]' ({path} will not be drawn)"


def _have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def list_cases() -> None:
    for c in _cases.CASES:
        kind = "fwd+bwd" if c.loss else "fwd only"
        bw = "memory-bound" if c.bytes_fwd else ""
        peers = ",".join(p.name for p in c.peers)
        print(f"{c.key:<40}{c.shape:<40}{kind:<10}{','.join(c.devices):<10}{bw:<14}{peers}")


def _device(p, a) -> torch.device:
    """The device, after the checks both kinds of run share: --device, --repeat, --backend."""
    device = torch.device(a.device) if a.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device here")
    if a.repeat < 1:
        p.error(f"--repeat must be at least 1, got {a.repeat}")
    known = set(pk.BACKENDS) - {"auto"}
    if a.backend and not set(a.backend) <= known:
        p.error(f"unknown backend(s) {sorted(set(a.backend) - known)}; known: {sorted(known)}")
    return device


def _meta(device: torch.device, argv, method: dict) -> dict:
    return {"date": time.strftime("%Y-%m-%d"), "device": device_name(device), "torch": torch.__version__,
            "build": pk.build_info(), "command": " ".join(["python -m pixelkernels bench", *argv]),
            "method": {"timer": "cuda events" if device.type == "cuda" else "time.perf_counter", **method}}  # fmt: skip


def _write(a, meta: dict, rows: list[dict], markdown) -> None:
    """--json, --csv and --markdown (`markdown(rows)` -> the table)."""
    if a.json:
        report.write_json(a.json, meta, rows)
    if a.csv and rows:
        report.write_csv(a.csv, rows)
    if a.markdown and rows:
        with open(a.markdown, "w") as f:
            f.write(markdown(rows))


def _models(p, a, argv) -> int:
    from . import models as mb
    from ..models import MODELS

    device = _device(p, a)
    if a.model and not set(a.model) <= set(MODELS):
        p.error(f"unknown model(s) {sorted(set(a.model) - set(MODELS))}; known: {sorted(MODELS)}")
    print(f"# {device_name(device)}, torch {torch.__version__}; training step (forward, backward, Adam)")
    print(mb.header())
    rows = mb.run_models(device, a.model, a.backend, repeat=a.repeat, budget_s=0.5 if a.quick else 3.0)
    _write(a, _meta(device, argv, {"runs": a.repeat, "rounds_per_run": ROUNDS, "what": mb.__doc__}), rows, mb.markdown)
    return 0


def _host(a, argv) -> int:
    from . import host

    cpu = torch.device("cpu")
    print(f"# {device_name(cpu)}, torch {torch.__version__}; host path per call on the small inputs, 1 thread, checks on")
    rows = host.host_rows(a.op, a.workload, a.backend, budget_s=0.1 if a.quick else 0.5)
    print(host.header())
    for r in rows:
        print(host.format_row(r))
    method = {"what": host.__doc__, "threads": 1, "unit": "one torch.add of two 1-element tensors (unit_us)"}
    _write(a, _meta(cpu, argv, method), rows, host.markdown)
    return 0


def _kernels(p, a, argv) -> int:
    from . import kernels

    device = _device(p, a)
    print(f"# {device_name(device)}, torch {torch.__version__}; one forward+backward per backend under "
          f"torch.profiler: {'each CUDA kernel' if device.type == 'cuda' else 'each ATen op (self CPU time)'}")  # fmt: skip
    rows = kernels.kernel_rows(a.op, a.workload, a.backend, device)
    print(kernels.header())
    for r in rows:
        print(kernels.format_row(r))
    _write(a, _meta(device, argv, {"what": kernels.__doc__, "runs": 1}), rows, kernels.markdown)
    return 0


def _model_kernels(a, argv) -> int:
    import json

    from . import gpu_model

    measured = json.load(open(a.measured))["rows"] if a.measured else None
    rows = gpu_model.kernel_rows(a.op, a.workload, a.gpu, gpu_model.load_facts(a.sass_facts), measured)
    print(gpu_model.kernel_table(rows, a.gpu))
    method = {"what": gpu_model.__doc__, "gpu": dataclasses.asdict(gpu_model.GPUS[a.gpu]),
              "sass_facts": a.sass_facts or "build/sass-facts.json", "measured": a.measured}  # fmt: skip
    _write(a, _meta(torch.device("cpu"), argv, method), rows, lambda rs: gpu_model.kernel_table(rs, a.gpu) + "\n")
    return 0


def parser() -> argparse.ArgumentParser:
    """The options of `python -m pixelkernels bench` (each with its help and its default)."""
    from ..__main__ import HelpFormatter

    p = argparse.ArgumentParser(
        prog="python -m pixelkernels bench",
        formatter_class=HelpFormatter,
        description="Time the paper workloads: every usable backend against the op's reference and the best "
        "plain PyTorch (and optional peer libraries), side by side on one device. By default one representative "
        "row per op family (about 3 minutes on 2 CPU cores); --full for the whole table. The table goes to "
        "stdout, progress (each row as it starts and finishes, with the elapsed time) to stderr.",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to run (default: cuda if present, else cpu)")
    p.add_argument("--op", action="append", metavar="OP",
                   help="op(s) to run, repeatable, e.g. region_stats (default: with --full all, else one "
                        "representative row per op family)")  # fmt: skip
    p.add_argument("--workload", action="append", metavar="ID",
                   help="workload id(s), repeatable, e.g. W2 (default: every workload of the ops chosen)")
    p.add_argument("--full", action="store_true",
                   help="every row of the table (default: without --op/--workload, one row per op family, "
                        f"pixelkernels/bench/cases.py REPRESENTATIVE: {', '.join(_cases.REPRESENTATIVE)}; the "
                        "full table takes hours on 2 CPU cores)")  # fmt: skip
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="pixelkernels backend(s) to time, repeatable (default: every usable one but the Triton "
                        "interpreter on the CPU; the reference and the baseline always run)")  # fmt: skip
    p.add_argument("--repeat", type=int, default=1, help="runs per row, each timing every candidate side by side")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (default: measured)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress lines on stderr (default: a line as each row starts and finishes, and the "
                        "long rows' steps)")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="write the rows (and how they were measured) as JSON here "
                   "(default: not written)")  # fmt: skip
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV here (default: not written)")
    p.add_argument("--markdown", metavar="PATH",
                   help="write the pixelkernels rows as a Markdown table here (default: not written)")
    p.add_argument("--plot", metavar="PNG",
                   help="draw speedups and bandwidth fractions to this PNG; needs matplotlib: "
                        "pip install 'pixelkernels[plots]' (default: not drawn)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="short timing budget: smoke runs, not numbers (default: 2 s per timing pass, 5 calls a "
                        "round at least)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list the cases of the table and exit")
    p.add_argument("--model-gpu", action="store_true",
                   help="print each row's modelled H100 floor (bytes and FLOPs at peak rates; no GPU needed) and exit; "
                        "with --kernels, each CUDA kernel's emulated traffic and predicted time (bench/gpu_model.py)")
    p.add_argument("--gpu", choices=("h100", "h200"), default="h100",
                   help="with --model-gpu --kernels: the GPU whose copy bandwidth and SM count the prediction uses")
    p.add_argument("--sass-facts", metavar="PATH",
                   help="with --model-gpu --kernels: tools/sass_report.py's facts (default: build/sass-facts.json, "
                        "which make sass-check writes)")  # fmt: skip
    p.add_argument("--measured", metavar="JSON",
                   help="with --model-gpu --kernels: a GPU run's bench --kernels --json, for measured / predicted "
                        "(default: none, predictions only)")
    p.add_argument("--models", action="store_true",
                   help="time a training step of each model of pixelkernels.models instead (reference vs each backend)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="with --models: the model(s) to run, repeatable (default: all)")
    p.add_argument("--kernels", action="store_true",
                   help="device time per kernel of one forward+backward of each pixelkernels backend on the "
                   "selected workloads, under torch.profiler (bench/kernels.py)")  # fmt: skip
    p.add_argument("--host", action="store_true",
                   help="host time, ATen ops and syncs per call of each op on its small input (CPU, 1 thread; "
                   "bench/host.py)")  # fmt: skip
    return p


def main(argv=None) -> int:
    argv = sys.argv[2:] if argv is None else list(argv)
    p = parser()
    a = p.parse_args(argv)
    if a.host:
        return _host(a, argv)
    if a.kernels and a.model_gpu:
        return _model_kernels(a, argv)
    if a.kernels:
        return _kernels(p, a, argv)
    if a.models:
        return _models(p, a, argv)
    if a.list:
        list_cases()
        return 0
    if a.model_gpu:
        from . import gpu_model

        print(gpu_model.table(gpu_model.rows(a.op, a.workload)))
        return 0
    if a.plot and not _have_matplotlib():
        print(PLOT_HINT.format(flag="--plot", path=a.plot), file=sys.stderr)
        a.plot = None
    device = _device(p, a)
    if not a.full and not a.op and not a.workload:
        a.op, a.workload = _cases.representative()
        print(f"# one row per op family ({', '.join(_cases.REPRESENTATIVE)}); --full for the whole table")
    for flag, given, known in (
        ("op", a.op, {c.op for c in _cases.CASES}),
        ("workload", a.workload, {c.id for c in _cases.CASES}),
    ):
        if given and not set(given) <= known:
            p.error(f"unknown {flag}(s) {sorted(set(given) - known)}; known: {sorted(known)}")
    if not _cases.select(a.op, a.workload, device.type):
        p.error(f"no case of op {a.op or 'any'} and workload {a.workload or 'any'} runs on {device.type}")
    budget_s, min_reps = (0.2, 2) if a.quick else (2.0, 5)

    def meta_of(rows):
        return _meta(
            device,
            argv,
            {
                "cache_flush_mib": flush_bytes(device) / 2**20,
                "runs": a.repeat,
                "rounds_per_run": ROUNDS,
                "budget_s_per_kind_and_run": budget_s,
                "min_calls_per_round": min_reps,
                "speedups": "per run: the comparison's median / the row's median, both from that run; "
                "reported as median, min and max over the runs",
                "checks": "off in timed regions; checks_us = forward median with checks on - off, workload input",
                "bw_frac_time": "graph replay median" if device.type == "cuda" else "eager median",
                "copy_gbs": rows[0]["copy_gbs"] if rows else NAN,
            },
        )

    def partial(rows):  # --json after each case: a run cut at a deadline keeps its finished cases
        report.write_json(a.json, {**meta_of(rows), "partial": True}, rows)

    rows = run_bench(
        device, a.op, a.workload, a.backend, memory=not a.no_memory, budget_s=budget_s, repeat=a.repeat,
        min_reps=min_reps, progress=_quiet if a.no_progress else Progress(), on_case=partial if a.json else None,
    )  # fmt: skip
    command = " ".join(["python -m pixelkernels bench", *argv])
    meta = meta_of(rows)
    _write(a, meta, rows, report.markdown)
    if a.plot and rows:
        from .plot import plot

        plot(rows, a.plot, title=f"{meta['device']}, torch {meta['torch']}, {meta['date']}: {command}")
    return 0
