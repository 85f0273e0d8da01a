# pixelkernels: `make test` (everything a CPU machine can run + the nvcc compile check)
# and `make bench` (the paper workloads on the best device). Both set themselves up.
# `make cuda-wheel` / `make cuda-wheel-check`: the CUDA 13.0 wheel, built and checked without a GPU.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
TORCH_SPEC ?= torch==2.13.0
DEPS := triton==3.9.0 numpy scipy pytest pytest-xdist pytest-benchmark ninja setuptools wheel build expecttest
PYTEST_ARGS ?=
# pytest workers (pytest-xdist): the Triton interpreter and the CUDA emulator run one core each
PYTEST_WORKERS ?= 2
CUDA_SOURCES := $(wildcard csrc/cuda/*.cu)

.PHONY: venv build test pytest nvcc-check triton-check bench wheel wheel-smoke clean
.PHONY: cuda-venv cuda-wheel cuda-check-venv cuda-wheel-check

venv: $(VENV)/.stamp
$(VENV)/.stamp:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(DEPS)
	touch $@

build: venv
	$(PIP) install -q --no-build-isolation --no-deps -e .

test: build pytest nvcc-check triton-check

pytest: build
	$(PY) -m pytest tests -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

# Every .cu compiles standalone (no torch headers) for sm_80 and sm_90; ptxas spills are printed.
# One nvcc per file, NVCC_JOBS at a time (a file is one core's work for up to a minute or two);
# --threads compiles its architectures in parallel too (region_stats.cu alone took ~3 min). The
# objects are kept, so an unchanged file (and headers) is not compiled again.
NVCC_CHECK := build/nvcc-check
# Largest first, so the longest compile starts at once.
NVCC_OBJS := $(patsubst csrc/cuda/%.cu,$(NVCC_CHECK)/%.o,$(shell ls -S $(CUDA_SOURCES)))
CUDA_HEADERS := $(wildcard csrc/common/*.h csrc/cuda/*.cuh)
NVCC_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

nvcc-check:
	@test -x "$(NVCC)" || { echo "nvcc not found: the CUDA compile check needs the CUDA toolkit"; exit 1; }
	@$(MAKE) --no-print-directory -j$(NVCC_JOBS) $(NVCC_OBJS)
	@for f in $(NVCC_OBJS:.o=.log); do \
	  echo "ptxas $$f"; grep -E "spill|Used [0-9]+ registers" $$f | sed 's/^/    /'; \
	done

$(NVCC_CHECK)/%.o: csrc/cuda/%.cu $(CUDA_HEADERS)
	@mkdir -p $(NVCC_CHECK)
	@echo "nvcc $<"
	@$(NVCC) -std=c++17 -O3 -Icsrc --threads $(NVCC_JOBS) -c $< -o $@ \
	  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	  -gencode arch=compute_90,code=compute_90 -Xptxas -v 2> $(@:.o=.log) \
	  || { cat $(@:.o=.log); rm -f $@; exit 1; }

# Every Triton kernel compiles for sm_80 and sm_90 (offline, Triton's own ptxas; no GPU needed).
triton-check: build
	TRITON_DEFAULT_FP_FUSION=1 $(PY) .ci/triton_compile_check.py

bench: build
	$(PY) -m pixelkernels bench $(BENCH_ARGS)

wheel: venv
	rm -rf wheelhouse && $(PIP) wheel -q --no-build-isolation --no-deps -w wheelhouse .

# Install the wheel into a fresh venv (torch from the same spec) and run a smoke test there.
wheel-smoke: wheel
	rm -rf build/wheel-venv && $(PYTHON) -m venv build/wheel-venv
	build/wheel-venv/bin/python -m pip install -q $(TORCH_SPEC)
	build/wheel-venv/bin/python -m pip install -q --no-deps wheelhouse/pixelkernels-*.whl
	cd /tmp && $(CURDIR)/build/wheel-venv/bin/python $(CURDIR)/.ci/smoke.py

# The CUDA wheel, built on a machine without a GPU: the registry's torch==2.11.0 is the CUDA 13.0
# build (the GPU machines' torch), and its nvidia-* packages bring the cuBLAS/cuSPARSE headers
# that this machine's toolkit lacks (setup.py finds them). `make cuda-wheel PYTHON_CUDA=python3.12`
# builds the cp312 wheel that a GPU session installs instead of compiling (.ci/gpu). The venvs
# are kept between runs (stamp files); the wheels land in $(CUDA_WHEELHOUSE)/.
PYTHON_CUDA ?= python3
CUDA_TORCH_SPEC ?= torch==2.11.0
CUDA_ARCH_LIST ?= 8.0;9.0+PTX
CUDA_WHEELHOUSE ?= wheelhouse-cu130
CUDA_PYTAG := $(shell $(PYTHON_CUDA) -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null)
CUDA_VENV := build/cu130-venv-$(CUDA_PYTAG)
CUDA_CHECK_VENV := build/cu130-check-venv-$(CUDA_PYTAG)
CUDA_WHEEL = $(wildcard $(CUDA_WHEELHOUSE)/pixelkernels-*-$(CUDA_PYTAG)-$(CUDA_PYTAG)-*.whl)

cuda-venv: $(CUDA_VENV)/.stamp
$(CUDA_VENV)/.stamp:
	@test -n "$(CUDA_PYTAG)" || { echo "PYTHON_CUDA=$(PYTHON_CUDA) does not run"; exit 1; }
	rm -rf $(CUDA_VENV) && $(PYTHON_CUDA) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_VENV)/bin/python -m pip install -q $(CUDA_TORCH_SPEC) numpy ninja setuptools wheel
	touch $@

cuda-wheel: cuda-venv
	rm -f $(CUDA_WHEELHOUSE)/pixelkernels-*-$(CUDA_PYTAG)-$(CUDA_PYTAG)-*.whl
	PIXELKERNELS_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST="$(CUDA_ARCH_LIST)" $(CUDA_VENV)/bin/python -m pip wheel \
	  -q --no-build-isolation --no-deps -w $(CUDA_WHEELHOUSE) .
	@ls -l $(CUDA_WHEELHOUSE)/pixelkernels-*+cu*-$(CUDA_PYTAG)-$(CUDA_PYTAG)-*.whl

# A second venv with the same torch and no build tools (pip's cache makes the torch install
# quick), in which the wheel is installed and checked from outside the repo, so that the source
# tree's pixelkernels/ is not what gets imported: build facts, a CUDA and a CPU kernel for every
# schema, CPU vs reference (.ci/cuda_wheel_check.py), then the tests marked fake_cuda
# (torch.compile on fake CUDA tensors). pytest's exit 5 (no test carries the marker) fails.
cuda-check-venv: $(CUDA_CHECK_VENV)/.stamp
$(CUDA_CHECK_VENV)/.stamp:
	@test -n "$(CUDA_PYTAG)" || { echo "PYTHON_CUDA=$(PYTHON_CUDA) does not run"; exit 1; }
	rm -rf $(CUDA_CHECK_VENV) && $(PYTHON_CUDA) -m venv $(CUDA_CHECK_VENV)
	$(CUDA_CHECK_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_CHECK_VENV)/bin/python -m pip install -q $(CUDA_TORCH_SPEC) numpy pytest expecttest
	touch $@

cuda-wheel-check: cuda-check-venv
	@test -n "$(CUDA_WHEEL)" || { echo "no $(CUDA_PYTAG) wheel in $(CUDA_WHEELHOUSE)/: make cuda-wheel first"; exit 1; }
	$(CUDA_CHECK_VENV)/bin/python -m pip install -q --no-deps --force-reinstall $(CUDA_WHEEL)
	cd "$$(mktemp -d)" && $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python $(CURDIR)/.ci/cuda_wheel_check.py \
	  --arch-list "$(CUDA_ARCH_LIST)"
	cd "$$(mktemp -d)" && $(CURDIR)/$(CUDA_CHECK_VENV)/bin/python -m pytest $(CURDIR)/tests \
	  -m fake_cuda -p no:cacheprovider -q

clean:
	rm -rf build dist wheelhouse $(CUDA_WHEELHOUSE) *.egg-info pixelkernels/_C*.so
