# Entry points. Each target installs what it needs (idempotently) before it runs.
BUILD ?= build
CACHE ?= $(HOME)/.cache/strata
MODEL ?= $(CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
JOBS  ?= $(shell nproc)

.PHONY: all setup deps models python build demo test bench clean

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

bench: setup build
	scripts/setup_reference.sh
	python3 bench/engine_vs_llamacpp.py --strata $(BUILD)/strata

clean:
	rm -rf $(BUILD)
