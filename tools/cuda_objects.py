"""The CUDA kernels' object files: csrc/cuda/*.cu compiled once, shared by every CUDA build.

The .cu files include no torch header (SPEC §1), so their object code does not depend on the
torch version. Each is compiled with one set of nvcc flags (those torch.utils.cpp_extension
gives a .cu file, minus the torch and Python include dirs and defines the kernels never read),
cached under build/cuda-objects/ by a hash of the source, every header it may include, the
flags, nvcc's and the host compiler's versions. `make nvcc-check` fills the cache and prints
ptxas' register and spill lines; setup.py links the same objects into every CUDA wheel, so a
second wheel (another torch, another Python) compiles only the torch side (csrc/*.cpp).

    python tools/cuda_objects.py [--nvcc NVCC] [--arch-list "8.0;9.0+PTX"] [--jobs N] [--ptxas]

Standard library only: setup.py loads it by path, the nvcc check runs it with any Python 3.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
CACHE = ROOT / "build" / "cuda-objects"
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"

# torch.utils.cpp_extension.COMMON_NVCC_FLAGS (the same from torch 2.6 to 2.14); a test compares.
TORCH_NVCC_FLAGS = (
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "--expt-relaxed-constexpr",
)


def cuda_sources() -> list[Path]:
    return sorted(CSRC.glob("cuda/*.cu"))


def cuda_headers() -> list[Path]:
    """Every header a .cu may include from csrc/ (a change to any of them recompiles all)."""
    return sorted(CSRC.glob("common/*.h")) + sorted(CSRC.glob("cuda/*.cuh"))


# The names torch's _get_cuda_arch_flags accepts in TORCH_CUDA_ARCH_LIST (combined names first).
NAMED_ARCHES = {
    "Kepler+Tesla": "3.7",
    "Kepler": "3.5+PTX",
    "Maxwell+Tegra": "5.3",
    "Maxwell": "5.0;5.2+PTX",
    "Pascal": "6.0;6.1+PTX",
    "Volta+Tegra": "7.2",
    "Volta": "7.0+PTX",
    "Turing": "7.5+PTX",
    "Ampere+Tegra": "8.7",
    "Ampere": "8.0;8.6+PTX",
    "Ada": "8.9+PTX",
    "Hopper": "9.0+PTX",
    "Blackwell+Tegra": "11.0",
    "Blackwell": "10.0;10.3;12.0;12.1+PTX",
}


def arch_flags(arch_list: str) -> list[str]:
    """-gencode flags for TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX", "Ampere;Hopper"), as torch's
    _get_cuda_arch_flags writes them (sorted, one per arch, plus compute_XY PTX for "+PTX")."""
    arch_list = arch_list.replace(" ", ";")
    for name, archs in NAMED_ARCHES.items():
        arch_list = arch_list.replace(name, archs)
    flags = set()
    for arch in arch_list.split(";"):
        if not arch:
            continue
        m = re.fullmatch(r"(\d+)\.(\d+a?)(\+PTX)?", arch)
        if not m:
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: cannot read arch {arch!r} (e.g. 8.0, 9.0+PTX)")
        num = m.group(1) + m.group(2)
        flags.add(f"-gencode=arch=compute_{num},code=sm_{num}")
        if m.group(3):
            flags.add(f"-gencode=arch=compute_{num},code=compute_{num}")
    if not flags:
        raise ValueError("TORCH_CUDA_ARCH_LIST is empty")
    return sorted(flags)


def nvcc_flags(arch_list: str = DEFAULT_ARCH_LIST, debug: bool = False) -> list[str]:
    """The flags of every .cu compile: torch's for .cu files (its common flags, -fPIC for the
    host code, -std, -gencode list, -ccbin $CC when CC is set) and ours (optimisation, -Icsrc)."""
    opt = ["-O0", "-G", "-g"] if debug else ["-O3", "-DNDEBUG", "-lineinfo"]
    flags = [*TORCH_NVCC_FLAGS, "--compiler-options", "-fPIC", "-std=c++17", *opt, f"-I{CSRC}"]
    flags += arch_flags(arch_list)
    if os.environ.get("CC"):
        flags += ["-ccbin", os.environ["CC"]]
    return flags


def _version_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{cmd[0]}: {e}"
    return r.stdout.strip()


def nvcc_release(nvcc: str) -> str | None:
    """ "13.0" from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.88")."""
    m = re.search(r"release (\d+\.\d+)", _version_line([nvcc, "--version"]))
    return m.group(1) if m else None


def toolchain_id(nvcc: str) -> str:
    """What else decides the object code: nvcc's version and the host compiler's."""
    host = os.environ.get("CC") or "gcc"
    return _version_line([nvcc, "--version"]) + "\n" + _version_line([host, "--version"]).split("\n")[0]


def object_paths(flags: list[str], toolchain: str, sources=None, cache: Path = CACHE) -> dict[Path, Path]:
    """Each source's object in the cache: <stem>-<16 hex digits of the content hash>.o."""
    common = hashlib.sha256()
    common.update(toolchain.encode() + b"\0" + "\0".join(flags).encode() + b"\0")
    for h in cuda_headers():
        common.update(str(h.relative_to(CSRC)).encode() + b"\0" + h.read_bytes() + b"\0")
    out = {}
    for src in sources if sources is not None else cuda_sources():
        h = common.copy()
        h.update(src.read_bytes())
        out[src] = cache / f"{src.stem}-{h.hexdigest()[:16]}.o"
    return out


def _compile(nvcc: str, src: Path, obj: Path, flags: list[str], threads: int) -> None:
    tmp = obj.with_name(f"{obj.name}.{os.getpid()}.tmp")
    # -Xptxas -v and --threads change what nvcc prints and how fast, not the object.
    cmd = [nvcc, *flags, "--threads", str(threads), "-Xptxas", "-v", "-c", str(src), "-o", str(tmp)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = obj.with_suffix(".log")
    log.write_text(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"nvcc failed on {src.relative_to(ROOT)} (exit {r.returncode}):\n{r.stdout}{r.stderr}"
        )
    os.replace(tmp, obj)  # atomic: a concurrent build never links half an object


def compile_objects(
    nvcc: str,
    arch_list: str = DEFAULT_ARCH_LIST,
    jobs: int = 2,
    debug: bool = False,
    cache: Path = CACHE,
    log=print,
) -> list[Path]:
    """The objects of every csrc/cuda/*.cu, compiling only those not in the cache: `jobs` nvcc
    processes at a time, largest source first (the longest compile starts at once), each with
    --threads `jobs` (one architecture per thread). Raises RuntimeError with nvcc's output."""
    flags = nvcc_flags(arch_list, debug)
    objs = object_paths(flags, toolchain_id(nvcc), cache=cache)
    todo = sorted((s for s, o in objs.items() if not o.is_file()), key=lambda s: -s.stat().st_size)
    for src, obj in objs.items():
        if src not in todo:
            log(f"nvcc {src.relative_to(ROOT)}: cached {obj.relative_to(cache.parent)}")
    if todo:
        cache.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = []
            for src in todo:
                log(f"nvcc {src.relative_to(ROOT)} -> {objs[src].relative_to(cache.parent)}")
                futures.append(pool.submit(_compile, nvcc, src, objs[src], flags, max(1, jobs)))
            errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise RuntimeError("\n".join(str(e) for e in errors))
    return list(objs.values())


def ptxas_report(obj: Path) -> list[str]:
    """ptxas' register and spill lines from an object's compile log."""
    log = obj.with_suffix(".log")
    lines = log.read_text().splitlines() if log.is_file() else ["(no log)"]
    return [ln for ln in lines if re.search(r"spill|Used \d+ registers", ln)]


def default_nvcc() -> str:
    return shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nvcc", default=default_nvcc())
    p.add_argument("--arch-list", default=os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST))
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--debug", action="store_true", help="-O0 -G -g, as DEBUG=1 builds")
    p.add_argument("--ptxas", action="store_true", help="print ptxas' register and spill lines")
    args = p.parse_args(argv)
    if not (shutil.which(args.nvcc) or Path(args.nvcc).is_file()):
        print(f"nvcc not found ({args.nvcc}): the CUDA compile check needs the CUDA toolkit")
        return 1
    try:
        objs = compile_objects(args.nvcc, args.arch_list, args.jobs, args.debug)
    except RuntimeError as e:
        print(e)
        return 1
    if args.ptxas:
        for obj in objs:
            print(f"ptxas {obj.relative_to(ROOT)}")
            for line in ptxas_report(obj):
                print("    " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
