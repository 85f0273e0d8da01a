"""The per-kernel model (`bench --model-gpu --kernels`) against the last GPU run's graph replays.

    python benchmarks/results/model_gpu_kernels_2026-12-01.py

Reads model_gpu_kernels_h100_2026-12-01.json (the model's rows: each launch's emulated traffic and
SASS facts), predicts each row's step again with the H200's copy bandwidth (gpu_model.GPUS),
and sets it beside the CUDA backend's graph-replay median of the same step on the H200 of
2026-11-28 (h200_2026-11-28*/bench*/bench-<op>.json: forward+backward, or forward for the
forward-only rows). A graph replay has no host time, so measured / predicted is the device
time the model does not explain."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from pixelkernels.bench import gpu_model  # noqa: E402


def measured() -> dict:
    out = {}
    for path in sorted(HERE.glob("h200_2026-11-28*/bench*/bench-*.json")):
        for r in json.loads(path.read_text())["rows"]:
            if r["backend"] != "cuda":
                continue
            for key in ("graph_fwdbwd_ms", "graph_fwd_ms"):  # forward+backward, else forward
                ms = r.get(key)
                if isinstance(ms, (int, float)) and ms == ms:
                    out[(r["op"], r["workload"])] = ms * 1e3  # the later lease's where both have it
                    break
    return out


def main() -> None:
    rows = json.loads((HERE / "model_gpu_kernels_h100_2026-12-01.json").read_text())["rows"]
    got = measured()
    h200 = gpu_model.GPUS["h200"]
    print(f"{'op':<20}{'workload':<14}{'launches':>9}{'MB moved':>10}{'MB min':>8}{'H100 pred':>10}"
          f"{'H200 pred':>10}{'H200 graph':>11}{'meas/pred':>10}")
    for total in (r for r in rows if r["kernel"] == "(all)"):
        key = (total["op"], total["workload"])
        mine = [r for r in rows if (r["op"], r["workload"]) == key and r["kernel"] != "(all)"]
        pred = sum(gpu_model.predict_us(r, None if r["occupancy"] is None else r, h200) for r in mine)
        meas = got.get(key)
        ratio = f"{meas / pred:>10.1f}" if meas else f"{'-':>10}"
        print(f"{key[0]:<20}{key[1]:<14}{total['launches']:>9}{(total['read'] + total['written']) / 1e6:>10.1f}"
              f"{total['minimal'] / 1e6:>8.1f}{total['predicted_us']:>10.1f}{pred:>10.1f}"
              f"{meas if meas else float('nan'):>11.1f}{ratio}")


if __name__ == "__main__":
    main()
