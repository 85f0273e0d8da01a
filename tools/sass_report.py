"""What a GPU would run: a per-kernel report from the machine code, checked against expectations.

For every CUDA kernel instantiation (the objects of tools/cuda_objects.py, sm_80 and sm_90) and
every Triton kernel compiled offline (.ci/triton_compile_check.py --cubins keeps the cubins of
its --archs, sm_90 in `make triton-check`; the report reads --triton-archs, sm_90 by default: nvdisasm takes
~0.3 s a cubin, and each Triton kernel is one source for both, which CI's clock cannot pay twice):
registers per thread, stack frame (where spills go) and ptxas' spill bytes, static shared
memory, theoretical occupancy, and counts from the SASS — global loads and stores by width,
local-memory instructions (LDL/STL, and how many sit inside a loop), shared-memory
instructions, tensor-core instructions, atomics, barriers. `--check` holds every row to its
expectation in tools/kernel_expectations.py and fails naming the kernel and the expectation.

    python tools/sass_report.py [--check] [--out build/sass-report.txt] [--triton DIR]

The disassemblers come from the pip packages nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm
(the toolkit here lacks them); they read the sm_90 code nvcc 13.0 builds. What this cannot
show: coalescing beyond one instruction's width, bank conflicts, scheduling, real timings.
Standard library only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import cuda_objects  # noqa: E402
import kernel_expectations  # noqa: E402

TRITON_DIR = ROOT / "build" / "sass" / "triton"

# Per-SM limits of compute capability 8.0 and 9.0 (CUDA C++ Programming Guide, "Compute
# Capabilities", Table 21/"Technical Specifications per Compute Capability"; the occupancy
# calculator's register and shared-memory allocation granularities).
ARCH_LIMITS = {
    80: dict(regs=65536, reg_unit=256, warp_unit=4, max_regs=255, threads=2048, blocks=32,
             smem=164 * 1024, smem_unit=128, smem_reserved=1024),
    90: dict(regs=65536, reg_unit=256, warp_unit=4, max_regs=255, threads=2048, blocks=32,
             smem=228 * 1024, smem_unit=128, smem_reserved=1024),
}  # fmt: skip


def occupancy(arch: int, regs: int, threads: int, smem: int = 0) -> float:
    """Theoretical occupancy (resident warps / the SM's maximum) of a kernel using `regs`
    registers per thread and `smem` bytes of shared memory per block of `threads` threads."""
    lim = ARCH_LIMITS[arch]
    warps = math.ceil(threads / 32)
    by_threads = lim["threads"] // (warps * 32)
    by_regs = lim["blocks"]
    if regs > 0:
        per_warp = math.ceil(regs * 32 / lim["reg_unit"]) * lim["reg_unit"]
        warps_sm = lim["regs"] // per_warp // lim["warp_unit"] * lim["warp_unit"]
        by_regs = warps_sm // warps
    per_block = math.ceil((smem + lim["smem_reserved"]) / lim["smem_unit"]) * lim["smem_unit"]
    by_smem = lim["smem"] // per_block
    blocks = min(lim["blocks"], by_threads, by_regs, by_smem)
    return blocks * warps * 32 / lim["threads"]


# ---------------------------------------------------------------------------------------------
# The disassemblers


def tool(name: str) -> str | None:
    """cuobjdump / nvdisasm: the pip package's (nvidia/cu13/bin), else on PATH or CUDA_HOME."""
    spec = importlib.util.find_spec("nvidia")
    for base in list(spec.submodule_search_locations or []) if spec else []:
        for exe in sorted(Path(base).glob(f"cu*/bin/{name}")):
            return str(exe)
    return shutil.which(name) or next(
        (str(p) for p in [Path("/usr/local/cuda/bin") / name] if p.is_file()), None
    )


def _run(args: list[str]) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def demangle(names: list[str]) -> dict[str, str]:
    if not names:
        return {}
    filt = shutil.which("c++filt")
    if filt is None:
        return {n: n for n in names}
    r = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=True)
    return dict(zip(names, r.stdout.splitlines()))


def short_name(demangled: str) -> str:
    """`forward_kernel<float, float>` from `void pixelkernels::cuda::(anonymous namespace)::
    forward_kernel<float, float>(...)`; Triton kernels keep their name."""
    s = re.sub(r"^void\s+", "", demangled)
    s = re.sub(r"\(anonymous namespace\)::", "", s)  # anywhere: edt::(anonymous namespace)::columns_kernel
    s = re.sub(r"pixelkernels::cuda::", "", s)
    depth = 0
    for i, ch in enumerate(s):  # cut the argument list (the first '(' outside template args)
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return s[:i]
    return s


# ---------------------------------------------------------------------------------------------
# One row per (kernel, arch)


@dataclasses.dataclass
class Row:
    source: str  # the .cu file's stem, or triton:<module>
    kernel: str  # short name with template arguments / Triton name[constexprs]
    arch: int
    signature: str = ""  # the demangled name with its arguments (what torch.profiler and the emulator show)
    regs: int = 0
    stack: int = 0  # bytes of stack frame per thread (spilled registers live there)
    spill: int | None = None  # ptxas' spill stores + loads (bytes), where its log is kept
    smem: int = 0  # static shared memory per block
    dyn_smem: int = 0  # the most dynamic shared memory its launches ask for (its expectation's)
    threads: int = 0  # block size (from the expectation row, or Triton's num_warps)
    occupancy: float = 0.0
    counts: dict = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.source}:{self.kernel}"


_OPS = {
    "LDG": "ldg", "STG": "stg", "LDL": "local", "STL": "local", "LDS": "lds", "STS": "sts",
    "LDSM": "lds", "HMMA": "mma", "IMMA": "mma", "HGMMA": "mma", "IGMMA": "mma", "WGMMA": "mma",
    "ATOM": "atomic", "ATOMG": "atomic", "RED": "atomic", "ATOMS": "atomic", "BAR": "barrier",
}  # fmt: skip


def _width(opcode: str) -> int:
    for suffix, bits in ((".128", 128), (".64", 64), (".U16", 16), (".S16", 16), (".U8", 8), (".S8", 8)):
        if suffix in opcode:
            return bits
    return 32


def sass_counts(lines: list[str]) -> dict:
    """Instruction counts of one function's SASS; global memory by width (ldg32, stg128, ...),
    and `local_in_loop`: LDL/STL between a backward branch and its target."""
    insts, branches = [], []
    for ln in lines:
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*?);", ln)
        if not m:
            continue
        addr, opcode, rest = int(m.group(1), 16), m.group(2), m.group(3)
        insts.append((addr, opcode))
        b = re.match(r"\s*(0x[0-9a-f]+)", rest)
        if opcode.startswith("BRA") and b and int(b.group(1), 16) <= addr:
            branches.append((int(b.group(1), 16), addr))
    counts: dict = {}
    for addr, opcode in insts:
        kind = _OPS.get(opcode.split(".")[0])
        if kind is None:
            continue
        if kind in ("ldg", "stg"):
            kind = f"{kind}{_width(opcode)}"
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "local" and any(lo <= addr <= hi for lo, hi in branches):
            counts["local_in_loop"] = counts.get("local_in_loop", 0) + 1
    counts["bytes_in_flight"] = _bytes_in_flight(insts, branches)
    return counts


def _bytes_in_flight(insts, loops) -> int:
    """Bytes of global loads one thread can have in flight: those of the innermost loop (one
    without another loop inside) that loads the most, per iteration, or of the whole function
    when it has no loop with a load. The Little's-law term of bench --model-gpu --kernels (it
    assumes a loop's loads are independent and issued before their first use, as unrolled
    streaming loops are)."""

    def ldg_bytes(lo, hi):
        return sum(_width(op) // 8 for a, op in insts if lo <= a <= hi and op.startswith("LDG"))

    inner = [(lo, hi) for lo, hi in loops if not any((lo, hi) != (l2, h2) and lo <= l2 and h2 <= hi for l2, h2 in loops)]
    best = max((ldg_bytes(lo, hi) for lo, hi in inner), default=0)
    return best or ldg_bytes(0, float("inf"))


def _by_arch(text: str, arch: int | None) -> dict[int, str]:
    """cuobjdump output split by ELF section: {arch: text}; a lone cubin's (no section
    headers) is `arch`'s."""
    out: dict[int, str] = {}
    parts = re.split(r"^arch = sm_(\d+)\s*$", text, flags=re.M)
    for a, body in zip(parts[1::2], parts[2::2]):
        out[int(a)] = out.get(int(a), "") + body
    return out or ({arch: text} if arch is not None else {})


def _ptxas_spills(log: Path) -> dict[tuple[int, str], int]:
    """{(arch, mangled name): spill store + load bytes} from a compile log of `-Xptxas -v`."""
    out, fn = {}, None
    if not log.is_file():
        return out
    for ln in log.read_text().splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", ln)
        if m:
            fn = (int(m.group(2)), m.group(1))
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ln)
        if m and fn is not None:
            out[fn] = int(m.group(1)) + int(m.group(2))
    return out


def rows_of(binary: Path, source: str, names: dict[str, str] | None = None, arch: int | None = None) -> list[Row]:
    """The rows of one object file (every architecture in it) or cubin (of `arch`)."""
    cuobjdump = tool("cuobjdump")
    res = _by_arch(_run([cuobjdump, "-res-usage", str(binary)]), arch)
    sass = _by_arch(_run([cuobjdump, "-sass", str(binary)]), arch)
    spills = _ptxas_spills(binary.with_suffix(".log"))
    rows = []
    mangled = sorted({m for text in res.values() for m in re.findall(r"Function (\S+):", text)})
    full = {m: m for m in mangled} if names else demangle(mangled)
    pretty = names or {m: short_name(d) for m, d in full.items()}
    for arch, text in res.items():
        if arch not in ARCH_LIMITS:
            continue
        funcs = dict(re.findall(r"Function (\S+):\s*\n\s*(REG:.*)", text))
        code = {}
        for m in re.finditer(r"Function : (\S+)\n(.*?)(?=\n\s*Function : |\Z)", sass.get(arch, ""), re.S):
            code[m.group(1)] = m.group(2).splitlines()
        for name, usage in funcs.items():
            u = dict(re.findall(r"(\w+(?:\[\d\])?):(\d+)", usage))
            rows.append(Row(
                source=source, kernel=pretty.get(name, name), arch=arch, signature=full.get(name, name),
                regs=int(u.get("REG", 0)),
                stack=int(u.get("STACK", 0)) + int(u.get("LOCAL", 0)), spill=spills.get((arch, name)),
                smem=int(u.get("SHARED", 0)), counts=sass_counts(code.get(name, [])),
            ))  # fmt: skip
    return rows


def _parallel(fn, items) -> list[Row]:
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return [row for rows in pool.map(fn, items) for row in rows]


def cuda_rows(nvcc: str, arch_list: str) -> list[Row]:
    """Rows of the objects `make nvcc-check` compiled (compiled here where missing)."""
    objs = cuda_objects.compile_objects(nvcc, arch_list, log=lambda *_: None)
    return _parallel(lambda obj: rows_of(obj, obj.stem.rsplit("-", 1)[0]), objs)


def triton_rows(directory: Path, archs: tuple[int, ...] = (90,)) -> list[Row]:
    """Rows of the cubins .ci/triton_compile_check.py --cubins wrote (with a .json each), for
    the architectures `archs`."""

    def one(meta_path: Path) -> list[Row]:
        meta = json.loads(meta_path.read_text())
        arch = int(re.search(r"\.sm(\d+)\.json$", meta_path.name).group(1))
        rows = rows_of(meta_path.with_suffix(".cubin"), f"triton:{meta['module']}", {meta["symbol"]: meta["kernel"]}, arch)
        for row in rows:
            row.threads = 32 * meta["num_warps"]
            row.smem = max(row.smem, meta.get("shared", 0))
        return rows

    metas = [m for a in archs for m in sorted(directory.glob(f"*.sm{a}.json"))]
    return _parallel(one, metas)


# ---------------------------------------------------------------------------------------------
# The report and the check


def apply_expectations(rows: list[Row]) -> list[str]:
    """Fill each row's block size and occupancy from its expectation; the failures, readable."""
    failures = []
    for row in rows:
        exp = kernel_expectations.find(row.key)
        if exp is None:
            failures.append(f"{row.key} (sm_{row.arch}): no row in tools/kernel_expectations.py (every kernel needs one)")
            continue
        row.threads = row.threads or exp.threads
        row.dyn_smem = exp.dynamic_smem
        row.occupancy = occupancy(row.arch, row.regs, row.threads, row.smem + row.dyn_smem)
        failures += [f"{row.key} (sm_{row.arch}): {f}" for f in exp.violations(row)]
    return failures


COLUMNS = ("ldg8", "ldg16", "ldg32", "ldg64", "ldg128", "stg16", "stg32", "stg64", "stg128",
           "local", "local_in_loop", "lds", "sts", "mma", "atomic", "barrier")  # fmt: skip


def table(rows: list[Row]) -> str:
    head = ["kernel", "sm", "regs", "stack", "spill", "smem", "dsmem", "thr", "occ"] + list(COLUMNS)
    lines = [head]
    for r in sorted(rows, key=lambda r: (r.key, r.arch)):
        lines.append([r.key, str(r.arch), str(r.regs), str(r.stack), "-" if r.spill is None else str(r.spill),
                      str(r.smem), str(r.dyn_smem), str(r.threads), f"{r.occupancy:.2f}"]
                     + [str(r.counts.get(c, 0)) for c in COLUMNS])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in lines)  # fmt: skip


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def facts(rows: list[Row], arch: int = 90) -> dict:
    """What bench --model-gpu --kernels reads of each kernel compiled for `arch`, by its
    demangled signature (the name the emulator's traffic record and torch.profiler give); the
    CUDA kernels only (a Triton kernel's symbol names no module)."""
    out = {}
    for r in sorted(rows, key=lambda r: r.key):
        if r.arch != arch or r.source.startswith("triton:"):
            continue
        widths = [int(k[3:]) for k, v in r.counts.items() if k.startswith("ldg") and k[3:].isdigit() and v]
        out[r.signature or r.kernel] = {
            "key": r.key, "regs": r.regs, "threads": r.threads, "smem": r.smem + r.dyn_smem,
            "occupancy": round(r.occupancy, 4), "ldg_bits": max(widths, default=0),
            "bytes_in_flight": r.counts.get("bytes_in_flight", 0), "stack": r.stack,
        }  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail on a row that misses its expectation")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "sass-report.txt")
    p.add_argument("--triton", type=Path, default=TRITON_DIR, help="cubins of triton_compile_check.py --cubins")
    p.add_argument("--triton-archs", default="90", help="comma-separated, of the cubins compiled: 80,90")
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--nvcc", default=cuda_objects.default_nvcc())
    p.add_argument("--arch-list", default=cuda_objects.DEFAULT_ARCH_LIST, help="as make nvcc-check's")
    p.add_argument("--facts", type=Path, default=ROOT / "build" / "sass-facts.json",
                   help="where to write the sm_90 facts bench --model-gpu --kernels reads")  # fmt: skip
    args = p.parse_args(argv)
    if tool("cuobjdump") is None:
        print("cuobjdump not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (make venv does)")
        return 1
    rows = ([] if args.no_cuda else cuda_rows(args.nvcc, args.arch_list)) + triton_rows(
        args.triton, tuple(int(a) for a in args.triton_archs.split(","))
    )
    failures = apply_expectations(rows)
    text = table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.facts.write_text(json.dumps(facts(rows), indent=1, sort_keys=True) + "\n")
    kernels = len({r.key for r in rows})
    print(f"sass report: {kernels} kernels, {len(rows)} (kernel, arch) rows -> {_shown(args.out)}, {_shown(args.facts)}")
    if args.check:
        for f in failures:
            print("FAILED " + f)
        if failures:
            return 1
        print("sass check: every kernel meets its expectations (tools/kernel_expectations.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
