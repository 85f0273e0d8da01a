"""Checks of an installed CUDA wheel on a machine without a GPU (`make cuda-wheel-check`).

Run it from a directory outside the repo, so that `import pixelkernels` finds the installed
wheel and not the source tree. It checks that the extension loaded from site-packages, that
it was built for this torch's CUDA and the expected arch list, that every schema of the
wheel's table (pixelkernels/schemas.def, which csrc/ops.cpp defines) has a CUDA and a CPU
kernel registered, and that the CPU path agrees with the reference (.ci/smoke.py, run first
so that its "no fallback warning at import" check holds).

    python /path/to/repo/.ci/cuda_wheel_check.py [--arch-list "8.0;9.0+PTX"] [--torch 2.14.1]
"""

import argparse
import importlib.metadata
import os
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch-list", default=os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX"))
    parser.add_argument("--torch", help="the torch version the wheel is for (default: the installed one)")
    args = parser.parse_args()

    runpy.run_path(str(REPO / ".ci" / "smoke.py"), run_name="__main__")  # imports pixelkernels

    import torch

    import pixelkernels as pk
    from pixelkernels._schema import SCHEMAS

    results = []  # (ok, what)

    def check(ok: bool, what: str) -> None:
        results.append((bool(ok), what))
        print(f"  {'ok' if ok else 'FAILED':<6} {what}")

    where = Path(pk.__file__).resolve()
    installed = "site-packages" in where.parts and where.parent != REPO / "pixelkernels"
    check(installed, f"imported from {where}")
    info = pk.build_info()
    print("build_info:", info)
    check(info["extension_error"] is None, f"extension loaded (error: {info['extension_error']})")
    cuda, arch_list = info["cuda"], info["arch_list"]
    check(cuda == torch.version.cuda, f"built for CUDA {cuda}, torch has {torch.version.cuda}")
    check(arch_list == args.arch_list, f"arch_list {arch_list!r}, expected {args.arch_list!r}")
    want_torch = args.torch or torch.__version__.split("+")[0]
    check(
        torch.__version__.split("+")[0] == want_torch,
        f"torch {torch.__version__} installed, {want_torch} wanted",
    )
    check(info["torch"] == want_torch, f"built against torch {info['torch']}, expected {want_torch}")
    version = importlib.metadata.version("pixelkernels")
    tag = pk._version.local_tag(want_torch, torch.version.cuda)
    check(version == f"{pk.__version__}+{tag}", f"installed pixelkernels {version}, expected +{tag}")

    names = list(SCHEMAS)
    check(names, f"schemas in pixelkernels/schemas.def: {names}")
    for name in names:
        for key in ("CUDA", "CPU"):
            has = torch._C._dispatch_has_kernel_for_dispatch_key(f"pixelkernels::{name}", key)
            check(has, f"pixelkernels::{name} has a {key} kernel")

    failed = sum(not ok for ok, _ in results)
    print(f"cuda wheel check: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
