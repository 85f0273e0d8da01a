"""The GPU verdict's kit (`make gpu-kit`): what a lent GPU machine needs that its image lacks, in
one ignored folder to carry (.gpukit/), checked before any device time is spent on it.

    python .ci/gpu_kit.py WHEEL [--kit .gpukit] [--python 3.12] [--torch 2.11.0]

WHEEL is the CUDA wheel of the image's torch (`make cuda-wheel CUDA_TORCH=2.11.0`: cp310-abi3, so
the image's Python 3.12 takes it). With it go the wheels of the test and bench dependencies the
image does not have (KIT_WHEELS; the device tool's KINDS.md lists what it has), downloaded
for that Python. Checks: the pixelkernels wheel is a CUDA build of that torch for every CPython
>= 3.10 with sm_90 code, pip would install every wheel for the image's Python and platform,
and the kit together with the working tree travels (under 64 MiB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the GPU image lacks, pinned: opcheck's tests import expecttest; the W1-hard peer.
KIT_WHEELS = ("expecttest==0.3.0", "pytorch-metric-learning==2.8.1")
LIMIT = 64 * 2**20  # the device tool's working tree and carried paths, together


def tree_bytes() -> int:
    """What travels besides the kit: tracked files and untracked ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()  # fmt: skip
    return sum((ROOT / f).stat().st_size for f in filter(None, out.split("\0")) if (ROOT / f).is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path)
    p.add_argument("--kit", type=Path, default=ROOT / ".gpukit")
    p.add_argument("--python", default="3.12", help="the GPU image's Python (KINDS.md)")
    p.add_argument("--torch", default="2.11.0", help="the GPU image's torch")
    a = p.parse_args()
    failed = []

    def check(ok, what):
        print(f"  {'ok' if ok else 'FAILED':<6} {what}")
        if not ok:
            failed.append(what)

    name = a.wheel.name
    mm = "".join(a.torch.split(".")[:2])
    check(f"+cu130.pt{mm}-cp310-abi3-" in name, f"{name}: a CUDA 13.0 build of torch {a.torch}, cp310-abi3")
    with zipfile.ZipFile(a.wheel) as z:
        sos = [n for n in z.namelist() if n.startswith("pixelkernels/_C") and n.endswith(".so")]
        check(sos == ["pixelkernels/_C.abi3.so"], f"the extension is pixelkernels/_C.abi3.so ({sos})")
        data = z.read(sos[0]) if sos else b""
    check(b"sm_90" in data, "the extension holds sm_90 code")
    if a.kit.exists():
        shutil.rmtree(a.kit)
    a.kit.mkdir(parents=True)
    shutil.copy2(a.wheel, a.kit / name)
    ver = a.python.replace(".", "")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", a.python, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "any", "-d", str(a.kit), *KIT_WHEELS],
                       capture_output=True, text=True)  # fmt: skip
    why = "" if r.returncode == 0 else f": {r.stderr.strip()[-300:]}"
    check(r.returncode == 0, f"downloaded {', '.join(KIT_WHEELS)} for CPython {a.python}{why}")
    # pip's own resolution for the image: every wheel installable on CPython 3.12, linux x86-64
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--no-deps", "--no-index",
                        "--only-binary=:all:", "--python-version", a.python, "--implementation", "cp",
                        "--platform", "linux_x86_64", "--platform", "manylinux_2_28_x86_64", "--target",
                        str(a.kit / ".dry"), *map(str, sorted(a.kit.glob("*.whl")))],
                       capture_output=True, text=True)  # fmt: skip
    shutil.rmtree(a.kit / ".dry", ignore_errors=True)
    why = "" if r.returncode == 0 else f": {r.stderr.strip()[-300:]}"
    check(r.returncode == 0, f"pip takes every wheel for cp{ver} on linux x86-64{why}")
    kit = sum(f.stat().st_size for f in a.kit.iterdir())
    total = kit + tree_bytes()
    check(total < LIMIT, f"kit {kit / 2**20:.1f} MiB + working tree = {total / 2**20:.1f} MiB < 64 MiB")
    for f in sorted(a.kit.iterdir()):
        print(f"  {f.stat().st_size / 2**20:7.2f} MiB  {f.name}")
    print(f"gpu kit: {'FAILED: ' + '; '.join(failed) if failed else 'ok'} ({a.kit})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
