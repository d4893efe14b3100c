#!/usr/bin/env bash
# The llama.cpp anchor for the CUDA backend: llama.cpp built with CUDA from the source that the
# llama-cpp-python 0.3.36 sdist vendors (commit 0c1e5709), llama-bench pp512/tg128 fully offloaded.
# Two halves, because the GPU machine reaches nothing outside itself and takes at most 64 MiB:
#   bench/cuda_llamacpp_anchor.sh prepare DIR SDIST MODEL...   (here) slim the sdist to DIR/llama.slim.tar.gz
#       (~6 MB: no models, docs, tests, web UI or non-CUDA backends) and, per model, its GGUF header
#       (metadata, vocabulary, tensor table) as DIR/<name>.head.gz plus the size of its tensor data;
#   bench/cuda_llamacpp_anchor.sh run DIR [ARCH]                (on the GPU machine) build llama-bench for
#       ARCH (default 90) and run it on each model rebuilt from its header with constant filler data
#       (same shapes and types as the real file; speed does not depend on weight values).
set -euo pipefail
mode=${1:?usage: prepare DIR SDIST MODEL... | run DIR [ARCH]}
dir=${2:?directory}
case "$mode" in
  prepare)
    sdist=${3:?sdist tarball}
    shift 3
    mkdir -p "$dir"
    tmp=$(mktemp -d)
    tar xzf "$sdist" -C "$tmp"
    src=$(ls -d "$tmp"/llama_cpp_python-*/vendor/llama.cpp)
    mv "$src" "$tmp/llama.slim"
    (cd "$tmp/llama.slim" && rm -rf models docs tests benches media tools/ui tools/server/public* .git .devops pocs examples/*/ &&
      for b in vulkan sycl opencl metal hexagon webgpu et cann musa hip kompute zdnn rpc blas zendnn openvino virtgpu; do
        rm -rf "ggml/src/ggml-$b"; done)
    tar czf "$dir/llama.slim.tar.gz" -C "$tmp" llama.slim
    rm -rf "$tmp"
    for model in "$@"; do
      name=$(basename "$model" .gguf)
      python3 - "$model" "$dir/$name" <<'EOF'
import gzip, os, sys
import gguf
path, out = sys.argv[1], sys.argv[2]
offset = gguf.GGUFReader(path).data_offset
with open(path, "rb") as f:
    head = f.read(offset)
with gzip.open(out + ".head.gz", "wb") as f:
    f.write(head)
with open(out + ".size", "w") as f:
    f.write(str(os.path.getsize(path) - offset))
EOF
    done
    du -sh "$dir"
    ;;
  run)
    arch=${3:-90}
    work=/tmp/llama_anchor
    mkdir -p "$work"
    tar xzf "$dir/llama.slim.tar.gz" -C "$work"
    cmake -S "$work/llama.slim" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF >"$work/configure.log"
    cmake --build "$work/build" -j "$(nproc)" --target llama-bench >"$work/build.log"
    for head in "$dir"/*.head.gz; do
      name=$(basename "$head" .head.gz)
      model="$work/$name.gguf"
      zcat "$head" >"$model"
      head -c "$(cat "$dir/$name.size")" /dev/zero | tr '\0' '\021' >>"$model"  # finite f16 scales
      "$work/build/bin/llama-bench" -m "$model" -ngl 99 -p 512 -n 128 -r 3
    done
    ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
