# Entry points. Each target installs what it needs (idempotently) before it runs.
BUILD ?= build
CACHE ?= $(HOME)/.cache/strata
MODEL ?= $(CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
JOBS  ?= $(shell nproc)
# The CUDA variant (-DSTRATA_CUDA=ON): built by `make test` wherever nvcc is installed (its GPU tests
# skip without a GPU), and run on a GPU by `make test-gpu`.
CUDA_BUILD ?= $(BUILD)-cuda
CUDA_ARCHS ?= 80;90
NVCC := $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)

.PHONY: all setup deps models python build demo test test-gpu cuda-build bench clean

all: build

deps:
	@scripts/setup_deps.sh

models:
	@scripts/fetch_models.sh

python:
	@scripts/setup_python.sh

setup: deps models python

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: setup build
	$(BUILD)/strata run $(MODEL) -p "Write a haiku about solid state drives." -n 64

test: setup build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@# The portable build (scalar kernels only, as on ARM) must build and pass its kernel tests too.
	@cmake -S . -B $(BUILD)-scalar -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_SCALAR_ONLY=ON >/dev/null
	@cmake --build $(BUILD)-scalar -j $(JOBS) --target test_tensor
	$(BUILD)-scalar/tests/test_tensor --gtest_brief=1
	@# The CUDA variant where a toolkit exists: the backend and its benchmark must build, and the backend
	@# tests that need no GPU pass (those that need one skip, saying why).
	@if [ -n "$(NVCC)" ]; then $(MAKE) --no-print-directory cuda-build && \
	  $(CUDA_BUILD)/tests/test_backend --gtest_brief=1; else echo "no nvcc: CUDA variant not built"; fi

cuda-build: deps
	@cmake -S . -B $(CUDA_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON \
	  -DCMAKE_CUDA_COMPILER=$(NVCC) -DSTRATA_CUDA_ARCHS="$(CUDA_ARCHS)" >/dev/null
	@cmake --build $(CUDA_BUILD) -j $(JOBS) --target test_backend test_model cuda_ops_bench strata

# On a GPU machine: every CUDA backend test and the forward pass on the GPU against the CPU
# (SmolLM2: make models), where a missing GPU is a failure, not a skip.
test-gpu: cuda-build
	STRATA_REQUIRE_GPU=1 $(CUDA_BUILD)/tests/test_backend
	STRATA_REQUIRE_GPU=1 $(CUDA_BUILD)/tests/test_model --gtest_filter='GpuForward.*:GpuGemma.*:Forged/GpuMoeForward.*'

bench: setup build
	scripts/setup_reference.sh
	python3 bench/engine_vs_llamacpp.py --strata $(BUILD)/strata

clean:
	rm -rf $(BUILD) $(CUDA_BUILD)
