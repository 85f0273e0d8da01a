# `make gpu-present-check`: the suite as a GPU machine collects and runs it, on this machine
# (.ci/gpu_present.py fakes one CUDA device; the tests marked cuda are deselected). It fails on
# a test that assumes no GPU, e.g. one that hands CPU tensors to the triton backend. Included by
# the Makefile and run by `make test`. test_bench.py, test_setup.py and test_build.py are left
# out: they check the bench command, setup.py and the build facts, mostly in subprocesses the
# fake does not reach, and took most of the check's time (test_build.py: ~60 s of CPU). So are the
# memory tests (a subprocess each) and gradcheck (float64 on explicit CPU devices, the same with
# or without a GPU): ~40 s of CPU. So are the tests whose subject runs in processes they start
# (the train command, torchrun's DDP, mp.spawn's evaluation and gloo metrics: ~36 s of CPU; their
# in-process halves name device="cpu").
GPU_PRESENT_ARGS ?= --ignore=tests/test_bench.py --ignore=tests/test_setup.py --ignore=tests/test_build.py \
  -k "not memory_is_linear and not gradcheck and not test_train_command and not test_ddp_equals_one_process \
  and not test_a_distributed_evaluation_equals_one_process and not test_accumulators_gloo_two_processes"

.PHONY: gpu-present-check
gpu-present-check: build
	PIXELKERNELS_EMU=0 PYTHONPATH=.ci $(PY) -m pytest tests -p gpu_present -m "not cuda" -q -n $(PYTEST_WORKERS) -p no:cacheprovider \
	  $(GPU_PRESENT_ARGS) $(PYTEST_ARGS)
