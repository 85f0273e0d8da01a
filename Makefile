# pixelkernels: `make test` (everything a CPU machine can run + the nvcc compile check)
# and `make bench` (the paper workloads on the best device). Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda) $(patsubst %/bin/nvcc,%,$(realpath $(NVCC))))
TORCH_SPEC ?= torch==2.13.0
DEPS := triton==3.9.0 numpy scipy pytest pytest-benchmark ninja setuptools wheel build expecttest
PYTEST_ARGS ?=
CUDA_SOURCES := $(wildcard csrc/cuda/*.cu)
CUDA_BINDINGS := $(wildcard csrc/cuda/*.cpp)

.PHONY: venv build test pytest nvcc-check bindings-check triton-check bench wheel wheel-smoke clean

venv: $(VENV)/.stamp
$(VENV)/.stamp:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q $(DEPS)
	touch $@

build: venv
	$(PIP) install -q --no-build-isolation --no-deps -e .

test: build pytest nvcc-check bindings-check triton-check

pytest: build
	$(PY) -m pytest tests -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

# Every .cu compiles standalone (no torch headers) for sm_80 and sm_90; ptxas spills are printed.
nvcc-check:
	@test -x "$(NVCC)" || { echo "nvcc not found: the CUDA compile check needs the CUDA toolkit"; exit 1; }
	@mkdir -p build/nvcc-check
	@for f in $(CUDA_SOURCES); do \
	  echo "nvcc $$f"; \
	  $(NVCC) -std=c++17 -O3 -Icsrc -c $$f -o build/nvcc-check/$$(basename $$f .cu).o \
	    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
	    -gencode arch=compute_90,code=compute_90 -Xptxas -v 2> build/nvcc-check/$$(basename $$f .cu).log \
	    || { cat build/nvcc-check/$$(basename $$f .cu).log; exit 1; }; \
	  grep -E "spill|Used [0-9]+ registers" build/nvcc-check/$$(basename $$f .cu).log | sed 's/^/    /'; \
	done

# The torch side of the CUDA backend cannot be built with the CPU wheel; check its syntax
# against torch's CUDA headers plus typedef stubs for the libraries this toolkit lacks.
bindings-check: venv
	@for f in $(CUDA_BINDINGS); do \
	  echo "syntax $$f"; \
	  g++ -std=c++17 -fsyntax-only -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -DPK_WITH_CUDA=1 -Icsrc \
	    -isystem $(CUDA_HOME)/include -isystem .ci/cuda_stubs \
	    $$($(PY) -c "import torch.utils.cpp_extension as c; print(' '.join('-isystem ' + p for p in c.include_paths()))") \
	    -isystem $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])") $$f || exit 1; \
	done

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

clean:
	rm -rf build dist wheelhouse *.egg-info pixelkernels/_C*.so
