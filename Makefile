# pixelkernels: `make test` (everything a CPU machine can run + the nvcc compile check)
# and `make bench` (the paper workloads on the best device). Both set themselves up.
# `make cuda-wheel` / `make cuda-wheel-check`: a CUDA wheel, built and checked without a GPU;
# `make wheels`: every CUDA wheel of the matrix (see below).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
TORCH_SPEC ?= torch==2.13.0
# what the tests need (the CUDA wheel's check venv too), then the build, the bench and the SASS
# report (cuobjdump/nvdisasm: the toolkit here lacks them; tools/sass_report.py)
TEST_DEPS := pytest pytest-xdist hypothesis expecttest
DEPS := triton==3.9.0 numpy scipy matplotlib pysodmetrics $(TEST_DEPS) pytest-benchmark ninja setuptools wheel build \
  nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
PYTEST_ARGS ?=
# pytest workers (pytest-xdist): the Triton interpreter and the CUDA emulator run one core each
PYTEST_WORKERS ?= 2
# Each worker's torch runs its intra-op threads on OpenMP, whose default wait policy keeps an idle
# thread spinning after every parallel region, on the core the other worker needs: PASSIVE lets it
# sleep. The same tests took 26 % less wall time and 30 % less CPU (2 cores, 2 workers, the CPU
# tests of region_stats and similarity_reduce: 48-49 s against 64-67 s). How threads wait, not how
# work is split: results and the thread counts the tests see are unchanged. Not for `make bench`.
TEST_TARGETS := pytest fuzz gpu-present-check cuda-wheel-check mutants cpu-gpu-shapes docs
$(TEST_TARGETS): export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: docs docs-serve venv build test pytest nvcc-check triton-check sass-check sass-report bench wheel wheel-smoke clean fuzz mutants cpu-gpu-shapes
.PHONY: cuda-venv cuda-wheel cuda-check-venv cuda-wheel-check wheels wheels-check triton-check-gpu-image gpu-kit

venv: $(VENV)/.stamp
$(VENV)/.stamp:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(DEPS)
	touch $@

build: venv
	$(PIP) install -q --no-build-isolation --no-deps -e .

test: build pytest gpu-present-check nvcc-check triton-check sass-check

include .ci/gpu_present.mk

pytest: build
	$(PY) -m pytest tests -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

# The property-based fuzz suite (tests/fuzz.py, every op's contract row) with more examples and
# fresh seeds than CI's fixed ones: FUZZ_EXAMPLES per op and layout.
FUZZ_EXAMPLES ?= 200
fuzz: build
	PIXELKERNELS_FUZZ=$(FUZZ_EXAMPLES) $(PY) -m pytest tests -q -n $(PYTEST_WORKERS) -k "test_fuzz" $(PYTEST_ARGS)

# Planted kernel bugs (.ci/mutants.py), each alone in a copy of the tree: every one must be
# killed by its tests. On demand (~30-60 min), not in CI.
mutants: build
	$(PY) .ci/mutants.py $(MUTANTS_ARGS)

# The contract's GPU shapes on the CPU backend against float64, each miss next to the float32
# reference's on the same inputs (.ci/cpu_at_gpu_shapes.py; on demand, ~2 min).
cpu-gpu-shapes: build
	$(PY) .ci/cpu_at_gpu_shapes.py $(CPU_GPU_SHAPES_ARGS)

# Every .cu compiles standalone (no torch headers) for sm_80 and sm_90; ptxas' register and spill
# lines are printed. tools/cuda_objects.py compiles them with the flags that every CUDA wheel's
# kernels get (torch's flags for .cu files), NVCC_JOBS nvcc at a time, largest first, each with
# --threads (region_stats.cu alone took ~3 min), and keeps the objects in build/cuda-objects/ by
# a hash of sources, headers, flags and nvcc: the CUDA wheels link these same objects.
NVCC_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CUDA_ARCH_LIST ?= 8.0;9.0+PTX

nvcc-check:
	$(PYTHON) tools/cuda_objects.py --nvcc "$(NVCC)" --arch-list "$(CUDA_ARCH_LIST)" --jobs $(NVCC_JOBS) --ptxas

# Every Triton kernel compiles for sm_90 (as it is, and with every argument divisible by 16) and
# sm_80 (with every integer argument 1), offline with Triton's own ptxas; no GPU needed. Why
# these three builds per kernel: .ci/triton_compile_check.py's docstring.
triton-check: build
	rm -rf build/sass/triton
	TRITON_DEFAULT_FP_FUSION=1 $(PY) .ci/triton_compile_check.py --archs 90 --cubins build/sass/triton --ones 80 --sixteens 90

# sm_90 again with the Triton of the GPU machines' torch (CUDA_TORCH, 2.11: Triton 3.6), from the
# CUDA wheel's venv: 3.6 failed to compile a kernel that 3.9 builds (first GPU run, 2026-11-25).
triton-check-gpu-image: cuda-venv
	PYTHONPATH=$(CURDIR) TRITON_DEFAULT_FP_FUSION=1 $(CUDA_VENV)/bin/python .ci/triton_compile_check.py --archs 90

# The machine code of every CUDA and Triton kernel (the objects and cubins of the two checks
# above) against tools/kernel_expectations.py: registers, spills, occupancy, load widths, local
# memory in loops. The report: build/sass-report.txt.
sass-check: nvcc-check triton-check
	$(PY) tools/sass_report.py --check --nvcc "$(NVCC)" --arch-list "$(CUDA_ARCH_LIST)"

# The report alone (no check), for reading.
sass-report: nvcc-check triton-check
	$(PY) tools/sass_report.py --nvcc "$(NVCC)" --arch-list "$(CUDA_ARCH_LIST)"

bench: build
	$(PY) -m pixelkernels bench $(BENCH_ARGS)

wheel: venv
	rm -rf wheelhouse && $(PIP) wheel -q --no-build-isolation --no-deps -w wheelhouse .

# Install the wheel into a copy of the venv (hard links: seconds, where a fresh venv took ~2.5 min
# to install torch again) without the editable install, and run a smoke test there.
wheel-smoke: wheel
	rm -rf build/wheel-venv && cp -al $(VENV) build/wheel-venv && rm -f build/wheel-venv/.stamp
	build/wheel-venv/bin/python -m pip uninstall -q -y pixelkernels
	build/wheel-venv/bin/python -m pip install -q --no-deps wheelhouse/pixelkernels-*.whl
	cd /tmp && $(CURDIR)/build/wheel-venv/bin/python $(CURDIR)/.ci/smoke.py

# CUDA wheels, built on a machine without a GPU against the registry's CUDA build of torch,
# whose nvidia-* packages bring the cuBLAS/cuSPARSE headers a minimal toolkit lacks (setup.py
# finds them). One wheel per torch (cp310-abi3: every CPython >= 3.10), into $(CUDA_WHEELHOUSE)/,
# built in a venv of PYTHON_CUDA:
#   make cuda-wheel [CUDA_TORCH=2.14.1] [PYTHON_CUDA=3.12]   (PYTHON_CUDA: a version or a command)
#   make cuda-wheel-check [same]    the wheel installed in a copy of its venv and checked there
#   make wheels [CUDA_HOME=<toolkit>] / make wheels-check    every torch x Python of the matrix
# The registry's default torch wheels of 2.11 to 2.14.1 are CUDA 13.0 builds, those of 2.9.1 and
# 2.10 CUDA 12.8 builds, which need a CUDA 12 toolkit: `make wheels CUDA_HOME=/usr/local/cuda-12.8`.
# `!=<version>+cpu`: a local find-links folder may hold the CPU build of the same version (this
# machine's /opt/wheels has 2.13.0+cpu), which pip prefers (a local version sorts higher).
# The CUDA kernels' objects are shared by every wheel (tools/cuda_objects.py): a wheel compiles
# only the torch side. The venvs are kept between runs (stamp files).
CUDA_TORCH ?= 2.11.0
# The environment of the torch install, for a machine whose pip configuration caps torch (this CI
# machine's caps it at 2.14.1): CUDA_PIP_ENV="PIP_CONFIG_FILE=/dev/null" lifts it for these venvs.
CUDA_PIP_ENV ?=
PYTHON_CUDA ?= python3
# "3.12": pyenv's newest 3.12 if there is one, else python3.12 on PATH; anything else as given.
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null)
python_cmd = $(if $(filter 3.%,$1),$(or $(lastword $(wildcard $(PYENV_ROOT)/versions/$1.*/bin/python$1)),python$1),$1)
CUDA_PY := $(call python_cmd,$(PYTHON_CUDA))
CUDA_PYTAG := $(shell $(CUDA_PY) -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null)
# 2.14.1 -> 214: the torch part of the wheel's local version (+cu130.pt214)
torch_mm = $(word 1,$(subst ., ,$1))$(word 2,$(subst ., ,$1))
# The CUDA of the registry's default torch wheel: 12.8 for 2.9 and 2.10, 13.0 for 2.11 to 2.14, 13.2 for 2.15.
torch_mm_dot = $(word 1,$(subst ., ,$1)).$(word 2,$(subst ., ,$1))
torch_cuda_tag = $(if $(filter 2.9 2.10,$(call torch_mm_dot,$1)),cu128,$(if $(filter 2.15,$(call torch_mm_dot,$1)),cu132,cu130))
CUDA_WHEELHOUSE ?= wheelhouse-$(call torch_cuda_tag,$(CUDA_TORCH))
CUDA_VENV := build/cuda-venv-torch$(CUDA_TORCH)-$(CUDA_PYTAG)
CUDA_CHECK_VENV := build/cuda-check-venv-torch$(CUDA_TORCH)-$(CUDA_PYTAG)
# one wheel per torch: Python's limited API (cp310-abi3) serves every CPython >= 3.10
CUDA_WHEEL_GLOB = $(CUDA_WHEELHOUSE)/pixelkernels-*+cu*.pt$(call torch_mm,$(CUDA_TORCH))-cp310-abi3-*.whl
CUDA_WHEEL = $(wildcard $(CUDA_WHEEL_GLOB))

cuda-venv: $(CUDA_VENV)/.stamp
$(CUDA_VENV)/.stamp:
	@test -n "$(CUDA_PYTAG)" || { echo "PYTHON_CUDA=$(PYTHON_CUDA) ($(CUDA_PY)) does not run"; exit 1; }
	rm -rf $(CUDA_VENV) && $(CUDA_PY) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_PIP_ENV) $(CUDA_VENV)/bin/python -m pip install -q "torch==$(CUDA_TORCH),!=$(CUDA_TORCH)+cpu" numpy ninja setuptools wheel
	@$(CUDA_VENV)/bin/python -c 'import torch, sys; sys.exit(torch.version.cuda is None and "torch " + torch.__version__ + " has no CUDA")'
	touch $@

cuda-wheel: cuda-venv
	rm -f $(CUDA_WHEEL_GLOB)
	PIXELKERNELS_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST="$(CUDA_ARCH_LIST)" $(CUDA_VENV)/bin/python -m pip wheel \
	  -q --no-build-isolation --no-deps -w $(CUDA_WHEELHOUSE) .
	@ls -l $(CUDA_WHEEL_GLOB)

# The wheel is installed and checked in a venv with the same torch and no build tools: a copy
# of the build venv made of hard links (seconds, no second torch install), less ninja and wheel,
# plus pytest; checked from outside the repo, so that the source tree's pixelkernels/ is not
# what gets imported: build facts, a CUDA and a CPU kernel for every schema, CPU vs reference
# (.ci/cuda_wheel_check.py), then the tests marked fake_cuda (torch.compile on fake CUDA
# tensors; pytest's exit 5, no test carries the marker, fails). CPU_SUBSET=1 adds the CPU
# backend's tests (CPU_SUBSET_ARGS: all but gradcheck) against the wheel's CPU kernels (~150 s
# on 2 cores); CPU_SUBSET=contract every op's contract suite on the CPU backend (CPU_CONTRACT_ARGS:
# opcheck, torch.compile, awkward and zero sizes, layouts, determinism, the reference; not the fuzz
# or gradcheck: ~25 s), what a newer torch's library, dispatcher and compiler would break;
# CPU_SUBSET=smoke only every op's CPU backend against the reference, forward and backward (~7 s):
# an older torch's missing piece fails here rather than on a lent GPU (torch 2.11 has no
# derivative for torch.aminmax: every prior_mask call failed on the H100 of 2026-11-26).
# PIXELKERNELS_EMU=0: neither run needs the CUDA emulator, which tests/conftest.py would
# otherwise build against this venv's torch first (~95 s each, for no test).
CPU_SUBSET ?= 0
CPU_SMOKE_ARGS ?= -k "cpu and backends_agree and not triton" --ignore=$(CURDIR)/tests/test_build.py \
  --ignore=$(CURDIR)/tests/test_setup.py --ignore=$(CURDIR)/tests/test_bench.py
CPU_SUBSET_ARGS ?= -k "cpu and not triton and not gradcheck" --ignore=$(CURDIR)/tests/test_build.py \
  --ignore=$(CURDIR)/tests/test_setup.py --ignore=$(CURDIR)/tests/test_bench.py
CPU_CONTRACT_ARGS ?= -k "cpu and not triton and not gradcheck and TestContract and not fuzz" \
  --ignore=$(CURDIR)/tests/test_build.py --ignore=$(CURDIR)/tests/test_setup.py --ignore=$(CURDIR)/tests/test_bench.py
cuda-check-venv: $(CUDA_CHECK_VENV)/.stamp
$(CUDA_CHECK_VENV)/.stamp: $(CUDA_VENV)/.stamp
	rm -rf $(CUDA_CHECK_VENV) && cp -al $(CUDA_VENV) $(CUDA_CHECK_VENV) && rm -f $(CUDA_CHECK_VENV)/.stamp
	$(CUDA_CHECK_VENV)/bin/python -m pip uninstall -q -y ninja wheel
	$(CUDA_PIP_ENV) $(CUDA_CHECK_VENV)/bin/python -m pip install -q $(TEST_DEPS)
	touch $@

cuda-wheel-check: cuda-check-venv
	@test -n "$(CUDA_WHEEL)" || { echo "no $(CUDA_WHEEL_GLOB): make cuda-wheel first"; exit 1; }
	$(CUDA_CHECK_VENV)/bin/python -m pip install -q --no-deps --force-reinstall $(CUDA_WHEEL)
	cd "$$(mktemp -d)" && $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python $(CURDIR)/.ci/cuda_wheel_check.py \
	  --arch-list "$(CUDA_ARCH_LIST)" --torch $(CUDA_TORCH)
	cd "$$(mktemp -d)" && PIXELKERNELS_EMU=0 $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python -m pytest $(CURDIR)/tests \
	  -m fake_cuda -p no:cacheprovider -q
	if [ "$(CPU_SUBSET)" = 1 ]; then cd "$$(mktemp -d)" && PIXELKERNELS_EMU=0 $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python -m pytest \
	  $(CURDIR)/tests -p no:cacheprovider -q -n $(PYTEST_WORKERS) $(CPU_SUBSET_ARGS); fi
	if [ "$(CPU_SUBSET)" = contract ]; then cd "$$(mktemp -d)" && PIXELKERNELS_EMU=0 $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python -m pytest \
	  $(CURDIR)/tests -p no:cacheprovider -q -n $(PYTEST_WORKERS) $(CPU_CONTRACT_ARGS); fi
	if [ "$(CPU_SUBSET)" = smoke ]; then cd "$$(mktemp -d)" && PIXELKERNELS_EMU=0 $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python -m pytest \
	  $(CURDIR)/tests -p no:cacheprovider -q -n $(PYTEST_WORKERS) $(CPU_SMOKE_ARGS); fi

# The GPU verdict's kit (.ci/gpu_kit.py; docs/guide/contributing.md "A GPU session"): the CUDA wheel of the GPU image's
# torch (GPU_TORCH; cp310-abi3, so the image's Python 3.12 takes it) and the wheels of the test
# dependencies the image lacks, in .gpukit/ (ignored), checked; carry it to `bash .ci/gpu`.
GPU_TORCH ?= 2.11.0
# The wheel is built when there is none yet (CI's cuda-wheel step made it) or when a source it
# holds (csrc/, the package's Python, setup.py) is newer than it: a stale wheel on a lent GPU
# tests old kernels. GPU_KIT_REBUILD=1 builds it anyway.
GPU_KIT_WHEEL_GLOB = wheelhouse-$(call torch_cuda_tag,$(GPU_TORCH))/pixelkernels-*+cu*.pt$(call torch_mm,$(GPU_TORCH))-cp310-abi3-*.whl
GPU_KIT_NEWER = find csrc pixelkernels setup.py -type f -newer "$$w" -not -name '*.so' -not -name '*.pyc' | head -1
gpu-kit: venv
	@w=$$(ls $(GPU_KIT_WHEEL_GLOB) 2>/dev/null | tail -1); \
	if [ "$(GPU_KIT_REBUILD)" = 1 ] || [ -z "$$w" ] || [ -n "$$($(GPU_KIT_NEWER))" ]; then \
	  [ -z "$$w" ] || echo "gpu-kit: rebuilding $$w ($$($(GPU_KIT_NEWER)) is newer)"; \
	  $(MAKE) --no-print-directory cuda-wheel CUDA_TORCH=$(GPU_TORCH); fi
	$(PY) .ci/gpu_kit.py --torch $(GPU_TORCH) $$(ls $(GPU_KIT_WHEEL_GLOB) | tail -1)

# The matrix: the torch versions whose registry wheels match the toolkit's CUDA major (nvcc of
# CUDA_HOME, else the one on PATH). `wheels` builds one cp310-abi3 wheel per torch (with the first
# of WHEELS_PYTHONS); `wheels-check` checks each in a venv of every one of WHEELS_PYTHONS (those
# the torch versions have wheels for).
WHEELS_NVCC = $(if $(CUDA_HOME),$(CUDA_HOME)/bin/nvcc,$(NVCC))
WHEELS_CUDA_MAJOR = $(shell $(WHEELS_NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
WHEELS_TORCH_13 := 2.11.0 2.12.1 2.13.0 2.14.1 2.15.0
WHEELS_TORCH_12 := 2.9.1 2.10.0
WHEELS_TORCH ?= $(WHEELS_TORCH_$(WHEELS_CUDA_MAJOR))
WHEELS_PYTHONS ?= 3.10 3.11 3.12 3.13

wheels wheels-check:
	@test -n "$(WHEELS_TORCH)" || { echo "no torch versions for the toolkit of $(WHEELS_NVCC) (CUDA major" \
	  "'$(WHEELS_CUDA_MAJOR)'; 13: $(WHEELS_TORCH_13); 12: $(WHEELS_TORCH_12)); set CUDA_HOME or WHEELS_TORCH"; exit 1; }
	@set -e; for t in $(WHEELS_TORCH); do for py in $(if $(filter wheels,$@),$(firstword $(WHEELS_PYTHONS)),$(WHEELS_PYTHONS)); do \
	  echo "=== $@: torch $$t, python $$py"; \
	  $(MAKE) --no-print-directory $(if $(filter wheels,$@),cuda-wheel,cuda-wheel-check) CUDA_TORCH=$$t PYTHON_CUDA=$$py; \
	done; done
	@ls -l wheelhouse-cu*/pixelkernels-*.whl

clean:
	rm -rf build dist wheelhouse wheelhouse-cu* *.egg-info pixelkernels/_C*.so

# The documentation site (docs/, issue 39): Sphinx with warnings as errors and nitpicky
# references, the gallery executed on the CPU, then every `>>>` example on the site run by the
# doctest builder (the gallery is not executed twice). Read it: make docs-serve.
DOCS_DEPS := sphinx==9.0.4 furo==2025.12.19 myst-parser==5.2.0 sphinx-gallery==0.22.1 matplotlib==3.11.2
SPHINX := $(PY) -m sphinx -W --keep-going -n -q
$(VENV)/.docs-stamp: $(VENV)/.stamp
	$(PIP) install -q $(DOCS_DEPS)
	touch $@
docs: build $(VENV)/.docs-stamp
	MPLBACKEND=Agg $(SPHINX) -b html docs docs/_build/html
	$(SPHINX) -b doctest -D plot_gallery=0 docs docs/_build/doctest
	@echo "docs: docs/_build/html/index.html (make docs-serve)"
docs-serve:
	$(PY) -m http.server -d docs/_build/html 8000
