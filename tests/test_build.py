"""The foundation: build facts, backend selection, the fallback without _C, version tags."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest
import torch

import pixelkernels as pk
from pixelkernels import _ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=300, cwd=ROOT
    )


def test_build_info_keys():
    info = pk.build_info()
    for key in ("version", "torch", "cuda", "arch_list", "openmp", "triton", "backends"):
        assert key in info, key
    assert info["version"] == pk.__version__
    assert "reference" in info["backends"]
    if _ext.HAVE_CPU_KERNELS:
        assert info["torch"].split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]
        assert isinstance(info["openmp"], bool)
        assert "cpu" in info["backends"]
    if info["cuda"] is None:
        assert info["arch_list"] is None


def test_local_version_tag():
    if not _ext.HAVE_CPU_KERNELS:
        pytest.skip("extension not built")
    try:
        version = importlib.metadata.version("pixelkernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("not installed with pip")
    tv = torch.__version__.split("+")[0].split(".")
    dev = "cu" + pk.build_info()["cuda"].replace(".", "") if pk.build_info()["cuda"] else "cpu"
    assert version.endswith(f"+{dev}.pt{tv[0]}{tv[1]}"), version


@pytest.mark.parametrize(
    "built,torch_cuda,ok",
    [
        (None, None, True),
        (None, "13.0", True),
        ("13.0", "13.0", True),
        ("13.0", "13.1", True),
        ("13.0", "12.8", False),
        ("12.8", None, False),
    ],
)
def test_cuda_version_check(built, torch_cuda, ok):
    if ok:
        _ext.check_cuda_versions(built, torch_cuda)
    else:
        with pytest.raises(RuntimeError, match=f"built for CUDA {built}"):
            _ext.check_cuda_versions(built, torch_cuda)


# (built for CUDA, the torch installed, its CUDA, the wheel the message must name)
MISMATCHES = [
    ("13.0", "2.10.0+cu128", "12.8", "+cu128.pt210 (the wheel for torch 2.10.0 with CUDA 12.8)"),
    ("13.0", "2.9.1+cu128", "12.8", "+cu128.pt29 (the wheel for torch 2.9.1 with CUDA 12.8)"),
    ("12.8", "2.11.0+cu130", "13.0", "+cu130.pt211 (the wheel for torch 2.11.0 with CUDA 13.0)"),
    ("12.8", "2.14.1", "13.0", "+cu130.pt214 (the wheel for torch 2.14.1 with CUDA 13.0)"),
    ("13.0", "2.13.0+cpu", None, "+cpu.pt213 (the wheel for torch 2.13.0, CPU)"),
]


@pytest.mark.parametrize("built,torch_version,torch_cuda,wheel", MISMATCHES)
def test_cuda_mismatch_names_the_wheel(built, torch_version, torch_cuda, wheel):
    with pytest.raises(RuntimeError) as e:
        _ext.check_cuda_versions(built, torch_cuda, torch_version)
    msg = str(e.value)
    assert f"built for CUDA {built}, but the installed torch {torch_version}" in msg
    assert f"pixelkernels=={pk.__version__}{wheel}" in msg
    assert "pip install --no-build-isolation ." in msg
    if torch_cuda:
        assert f"CUDA_HOME at a CUDA {torch_cuda.split('.')[0]} toolkit" in msg


def _as_if(torch_version: str, torch_cuda: str | None, built_cuda=None, installed=None) -> str:
    """Code that imports pixelkernels as if torch were `torch_version` with `torch_cuda`, and
    _C a CUDA build for `built_cuda` (None: _C fails to load), and pip's pixelkernels version
    `installed` ("": none installed; None: as it is)."""
    return (
        "import importlib.metadata, sys, types, warnings, torch\n"
        f"torch.__version__, torch.version.cuda = {torch_version!r}, {torch_cuda!r}\n"
        f"built, installed = {built_cuda!r}, {installed!r}\n"
        "if built:\n"
        "    info = dict(version='0', torch='0', cuda=built, arch_list='8.0', openmp=True)\n"
        "    sys.modules['pixelkernels._C'] = types.SimpleNamespace(build_info=lambda: info)\n"
        "else:\n"
        "    sys.modules['pixelkernels._C'] = None  # an ImportError, as a missing libcudart.so.13 gives\n"
        "if installed is not None:\n"
        "    def version(d, real=importlib.metadata.version):\n"
        "        if d != 'pixelkernels':\n"
        "            return real(d)\n"
        "        if not installed:\n"
        "            raise importlib.metadata.PackageNotFoundError(d)\n"
        "        return installed\n"
        "    importlib.metadata.version = version\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    try:\n"
        "        import pixelkernels\n"
        "    except RuntimeError as e:\n"
        "        print('RAISED', e)\n"
        "for x in w:\n"
        "    print('WARNED', x.message)\n"
    )


def test_cuda_mismatch_at_import():
    """A CUDA build whose _C loads beside a torch of another CUDA major raises at import."""
    built, torch_version, torch_cuda, wheel = MISMATCHES[0]
    r = _python(_as_if(torch_version, torch_cuda, built_cuda=built))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("RAISED pixelkernels was built for CUDA 13.0"), r.stdout
    assert f"pixelkernels=={pk.__version__}{wheel}" in r.stdout


def test_cuda_mismatch_at_import_when_the_extension_fails_to_load():
    """The usual case: the +cu130 wheel's _C cannot load beside a CUDA 12 torch (no
    libcudart.so.13). The wheel's local version tells, and the import raises all the same."""
    r = _python(_as_if("2.10.0+cu128", "12.8", installed=f"{pk.__version__}+cu130.pt211"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("RAISED pixelkernels was built for CUDA 13.0"), r.stdout
    assert (
        f"pixelkernels=={pk.__version__}+cu128.pt210 (the wheel for torch 2.10.0 with CUDA 12.8)" in r.stdout
    )


def test_load_failure_for_another_torch_warns_with_the_wheel():
    """Same CUDA major (here none), another torch: one warning, naming the wheel for this torch;
    the reference backend still works."""
    r = _python(_as_if("2.14.1+cpu", None, installed=f"{pk.__version__}+cpu.pt213"))
    assert r.returncode == 0, r.stderr
    warned = [ln for ln in r.stdout.splitlines() if ln.startswith("WARNED")]
    assert len(warned) == 1 and "compiled extension could not be loaded" in warned[0], r.stdout
    assert f"This is pixelkernels {pk.__version__}+cpu.pt213; torch 2.14.1+cpu needs" in warned[0]
    assert f"pixelkernels=={pk.__version__}+cpu.pt214 (the wheel for torch 2.14.1, CPU)" in warned[0]


@pytest.mark.parametrize(
    "installed,torch_version,torch_cuda,outcome",
    [
        (
            "cu130.pt211",
            "2.10.0+cu128",
            "12.8",
            "raises: +cu128.pt210 (the wheel for torch 2.10.0 with CUDA 12.8)",
        ),
        ("cu128.pt210", "2.11.0", "13.0", "raises: +cu130.pt211 (the wheel for torch 2.11.0 with CUDA 13.0)"),
        ("cu130.pt211", "2.14.1", None, "raises: +cpu.pt214 (the wheel for torch 2.14.1, CPU)"),
        ("cu130.pt211", "2.14.1", "13.0", "advice: +cu130.pt214 (the wheel for torch 2.14.1 with CUDA 13.0)"),
        ("cpu.pt213", "2.14.1", "13.0", "advice: +cu130.pt214 (the wheel for torch 2.14.1 with CUDA 13.0)"),
        ("cu130.pt211", "2.11.0", "13.0", ""),  # the tag fits: the load failed for another reason
        ("cpu.pt214", "2.14.1", "13.0", ""),  # a CPU build against a CUDA torch fits too
        (None, "2.14.1", "13.0", ""),  # not installed by pip (a source tree on sys.path)
    ],
)
def test_load_failure_advice(installed, torch_version, torch_cuda, outcome):
    """What an extension that failed to load says, from the installed wheel's local version."""
    if outcome.startswith("raises: "):
        with pytest.raises(RuntimeError, match="was built for CUDA") as e:
            _ext.check_load_failure(installed, torch_version, torch_cuda)
        assert f"pixelkernels=={pk.__version__}{outcome[8:]}" in str(e.value)
        return
    advice = _ext.check_load_failure(installed, torch_version, torch_cuda)
    if outcome:
        assert f"This is pixelkernels {pk.__version__}+{installed}; torch {torch_version} needs" in advice
        assert f"pixelkernels=={pk.__version__}{outcome[8:]}" in advice
    else:
        assert advice == ""


def test_set_and_use_backend():
    assert pk.get_backend() == "auto"
    pk.set_backend("reference")
    try:
        assert pk.get_backend() == "reference"
        with pk.use_backend("auto"):
            assert pk.get_backend() == "auto"
        assert pk.get_backend() == "reference"
    finally:
        pk.set_backend("auto")
    with pytest.raises(ValueError, match="backend must be one of"):
        pk.set_backend("gpu")
    with pytest.raises(ValueError, match="backend must be one of"), pk.use_backend("nope"):
        pass


def test_auto_rules_on_cpu():
    want = "cpu" if _ext.HAVE_CPU_KERNELS else "reference"
    assert pk._backend.resolve(None, torch.device("cpu")) == want
    assert pk._backend.resolve("reference", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="cuda backend needs CUDA tensors"):
        pk._backend.resolve("cuda", torch.device("cpu"))


def test_env_var_sets_global_backend():
    r = _python("import pixelkernels as pk; print(pk.get_backend())", PIXELKERNELS_BACKEND="reference")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "reference"
    r = _python("import pixelkernels", PIXELKERNELS_BACKEND="fast")
    assert r.returncode != 0 and "backend must be one of" in r.stderr


def test_triton_needs_interpreter_on_cpu():
    r = _python(
        "import pixelkernels as pk, torch\n"
        "try:\n"
        "    pk.region_stats(torch.randn(1,2,3,3), torch.zeros(1,3,3,dtype=torch.long), 1, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    print('REFUSED', e)\n",
        TRITON_INTERPRET="0",
    )
    assert r.returncode == 0, r.stderr
    assert "REFUSED" in r.stdout and ("TRITON_INTERPRET=1" in r.stdout or "not installed" in r.stdout)


def test_fallback_without_extension_warns_once_and_uses_reference():
    code = (
        "import sys, warnings\n"
        "sys.modules['pixelkernels._C'] = None  # as if the extension were missing\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import pixelkernels as pk\n"
        "msgs = [str(x.message) for x in w if 'compiled extension' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "import torch\n"
        "assert 'cpu' not in pk.available_backends()\n"
        "c, m, v = pk.region_stats(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), 2)\n"
        "assert c.tolist() == [[9.0, 0.0]]\n"
        "try:\n"
        "    pk.region_stats(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), 2, backend='cpu')\n"
        "except RuntimeError as e:\n"
        "    assert 'extension is not loaded' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('cpu backend should be refused')\n"
        "print('OK', pk.build_info()['extension_error'])\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.startswith("OK")


def test_checks_toggle():
    assert pk.checks_enabled()
    pk.set_checks(False)
    try:
        assert not pk.checks_enabled()
    finally:
        pk.set_checks(True)


def test_info_command():
    r = _python("import pixelkernels.__main__ as m, sys; sys.exit(m.main(['info']))")
    assert r.returncode == 0 and '"backends"' in r.stdout


@pytest.mark.parametrize(
    "env,expect_rc,expect",
    [
        ({"PIXELKERNELS_WITH_CUDA": "0"}, 0, "+cpu.pt"),
        ({"PIXELKERNELS_WITH_CUDA": "0", "PIXELKERNELS_LOCAL_VERSION": "0"}, 0, None),
        ({"PIXELKERNELS_WITH_CUDA": "maybe"}, 1, "must be auto, 0 or 1"),
    ],
)
def test_setup_switches(env, expect_rc, expect):
    """setup.py's build switches, read without building (`setup.py --version`)."""
    r = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=300,
    )
    out = r.stdout + r.stderr
    assert (r.returncode == 0) == (expect_rc == 0), out
    if expect_rc == 0:
        version = r.stdout.strip().splitlines()[-1]
        if expect is None:
            assert "+" not in version, version
        else:
            assert expect in version, version
    else:
        assert expect in out


def test_forcing_cuda_without_cuda_fails_loudly():
    if torch.version.cuda is not None:
        pytest.skip("this torch has CUDA")
    r = subprocess.run(
        [sys.executable, "setup.py", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PIXELKERNELS_WITH_CUDA": "1"},
        timeout=300,
    )
    assert r.returncode != 0
    assert "PIXELKERNELS_WITH_CUDA=1 but a CUDA build is impossible" in r.stdout + r.stderr


def test_cpu_baseline_kernels_match_reference():
    """The non-AVX2 build of the CPU kernels (what CPUs without AVX2 run), forced by env."""
    if not _ext.HAVE_CPU_KERNELS:
        pytest.skip("extension not built")
    code = (
        "import torch, pixelkernels as pk\n"
        "from pixelkernels.reference.region_stats import region_stats as ref\n"
        "g = torch.Generator().manual_seed(0)\n"
        "for R, cl in ((1, False), (2, False), (3, True), (6, False), (40, False)):\n"
        "    e = torch.randn(2, 17, 9, 13, generator=g, dtype=torch.float64)\n"
        "    if cl: e = e.contiguous(memory_format=torch.channels_last)\n"
        "    l = torch.randint(-1, R, (2, 9, 13), generator=g)\n"
        "    x = e.clone().requires_grad_(True); xr = e.clone().requires_grad_(True)\n"
        "    got, want = pk.region_stats(x, l, R, backend='cpu'), ref(xr, l, R)\n"
        "    for a, b in zip(got, want): torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)\n"
        "    (ga,) = torch.autograd.grad(got[1].sum() + got[2].sum(), x)\n"
        "    (gb,) = torch.autograd.grad(want[1].sum() + want[2].sum(), xr)\n"
        "    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)\n"
        "print('OK')\n"
    )
    r = _python(code, PIXELKERNELS_CPU_ISA="baseline")
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def test_every_mutant_applies():
    """`.ci/mutants.py --check`: each planted bug's text is still in its file (three had gone
    stale after kernel rewrites, unnoticed until the next `make mutants`)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, os.path.join(root, ".ci", "mutants.py"), "--check"], cwd=root,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
