"""Compile every Triton kernel for sm_80 and sm_90 without a GPU (Triton ships ptxas), so
CI catches kernels that run in the interpreter but would not build for a real device.
Each module in pixelkernels/triton/ lists its kernels in `compile_specs()`. The builds are
independent, one core each (~0.6 s apiece, 264 of them): they run in a pool of processes.

    python .ci/triton_compile_check.py [--archs 80,90] [--cubins DIR] [--ones [ARCH]] [--sixteens [ARCH]]

--archs: the architectures every kernel is built for as it is (default sm_80 and sm_90).
--cubins keeps each build's cubin and a JSON of its name, warps and shared memory in DIR, for
tools/sass_report.py (make sass-check). --ones adds, for sm_ARCH (default 90), each kernel with
every integer argument the constant 1: Triton's launcher specialises an int argument equal to 1
(a stride of a channels_last map, D = 1) into a constant, which has no tensor methods
(`sd.to(...)` compiled in the interpreter and failed on the first GPU run). --sixteens adds, for
sm_ARCH (default 90), each kernel with every pointer and integer argument marked divisible by
16, the launcher's other specialisation (D = 16 or 64, aligned maps): it changes the loops' and
loads' code (vector widths, known trip counts).

`make triton-check` builds sm_90 as is (the cubins the SASS check reads), sm_90 with every
argument divisible by 16, and sm_80 with every integer 1: a fresh machine spends ~0.5 s of CPU
a build, and sm_80's own lowering (mma v2 for the tl.dot kernels, no wgmma) is compiled by that
build as well as by one as is, while a failure of the ints-1 kind is the front end's, the same on
every architecture (1284 builds, ~10 min of CPU, where four per kernel took ~14). `make
triton-check-gpu-image` builds sm_90 as is with the Triton of the GPU machines' torch (3.6),
which fails on kernels that 3.9 builds: the GPU machines are H100s and H200s."""

import argparse
import concurrent.futures
import importlib
import json
import multiprocessing
import os
import pkgutil
import sys
import time
import warnings

os.environ.pop("TRITON_INTERPRET", None)  # real JIT functions, not interpreted ones
# The Triton kernels only: the compiled extension is never loaded (in triton-check-gpu-image it
# was built for another torch), and the package's warning about that is expected.
sys.modules["pixelkernels._C"] = None
warnings.filterwarnings("ignore", message="pixelkernels: the compiled extension", category=RuntimeWarning)

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import pixelkernels.triton as pkt  # noqa: E402

def _specs(module: str) -> list:
    return getattr(importlib.import_module(f"pixelkernels.triton.{module}"), "compile_specs", list)()


def build(module: str, index: int, arch: int, cubins: str | None = None, ones: bool = False,
          sixteens: bool = False) -> str | None:
    """Compile spec `index` of `module` for sm_`arch`: None, or what failed. With `cubins`, the
    cubin goes to <cubins>/<module>.<kernel>.<index>.sm<arch>.cubin beside its .json. With
    `ones`, every integer argument is the constant 1; with `sixteens`, every pointer and integer
    argument is divisible by 16 (no cubin kept for either)."""
    kernel, pointers, constexprs, warps, *extra = _specs(module)[index]
    options = {"num_warps": warps, **(extra[0] if extra else {})}  # a 5th element: more compile options
    sig = {name: pointers.get(name, "i32") for name in kernel.arg_names}
    if ones:
        constexprs = {**{n: 1 for n, t in sig.items() if t == "i32" and n not in constexprs}, **constexprs}
        cubins = None
    attrs = {}
    if sixteens:
        attrs = {(kernel.arg_names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items()
                 if n not in constexprs and (t == "i32" or t.startswith("*"))}  # fmt: skip
        cubins = None
    sig.update({k: "constexpr" for k in constexprs})
    src = ASTSource(kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as e:
        mode = " (ints = 1)" if ones else " (all divisible by 16)" if sixteens else ""
        return f"FAILED {module}.{kernel.__name__} sm_{arch}{mode} {pointers} {constexprs}: {e}"
    if cubins is not None:
        stem = os.path.join(cubins, f"{module}.{kernel.__name__}.{index}.sm{arch}")
        with open(stem + ".cubin", "wb") as f:
            f.write(compiled.asm["cubin"])
        dtypes = ",".join(str(v).lstrip("*") for v in pointers.values())
        consts = ",".join(f"{k}={v}" for k, v in constexprs.items())
        meta = {"module": module, "kernel": f"{kernel.__name__}[{dtypes}][{consts}]", "symbol": compiled.metadata.name,
                "num_warps": compiled.metadata.num_warps, "shared": compiled.metadata.shared}  # fmt: skip
        with open(stem + ".json", "w") as f:
            json.dump(meta, f)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="80,90", help="comma-separated: every kernel as it is, for each")
    p.add_argument("--cubins", help="keep the cubins and their metadata in this folder")
    p.add_argument("--ones", type=int, nargs="?", const=90, metavar="ARCH",
                   help="also every integer argument = 1, for sm_ARCH (default 90)")
    p.add_argument("--sixteens", type=int, nargs="?", const=90, metavar="ARCH",
                   help="also every argument divisible by 16, for sm_ARCH (default 90)")
    args = p.parse_args()
    archs = tuple(int(a) for a in args.archs.split(","))
    if args.cubins:
        os.makedirs(args.cubins, exist_ok=True)
    t0 = time.time()
    jobs = [
        (mod.name, i, arch, args.cubins, False, False)
        for mod in pkgutil.iter_modules(pkt.__path__)
        for i in range(len(_specs(mod.name)))
        for arch in archs
    ]
    for arch, mode in ((args.ones, (True, False)), (args.sixteens, (False, True))):
        if arch is not None:
            jobs += [(mod.name, i, arch, None, *mode) for mod in pkgutil.iter_modules(pkt.__path__)
                     for i in range(len(_specs(mod.name)))]  # fmt: skip
    # spawn: the workers import torch and triton afresh (no fork of a process with threads).
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1, mp_context=ctx) as pool:
        failures = [f for f in pool.map(build, *zip(*jobs)) if f is not None]
    for f in failures:
        print(f)
    if failures:
        return 1
    kinds = sorted({f"sm_{a}{' ints=1' if o else ' div16' if d else ''}" for _, _, a, _, o, d in jobs})
    print(f"triton {triton.__version__}: {len(jobs)} kernel builds ({', '.join(kinds)}) compiled in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
