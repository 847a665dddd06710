#!/usr/bin/env bash
# GPU check for the CUDA backend (issue 8), in one go: build, test, benchmark.
#
#   scripts/gpu-check.sh build     build test_cuda_kernels + ds4-bench-cuda (build-gpu/,
#                                  CUDA_ARCH=90 by default) and stage them in .gpu-bin/
#   scripts/gpu-check.sh run       on the GPU host: run the staged binaries (tests, then
#                                  compute-sanitizer memcheck, then the bench); logs go
#                                  to $OUT (or ./gpu-logs) as well as stdout
#   scripts/gpu-check.sh           both (a host that has the dev libraries and a GPU)
#
# The GPU host has nvcc but no GoogleTest, so the binaries are built where the dev
# libraries are (statically linked libstdc++/libgcc; cudart is static) and carried over.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
CUDA_ARCH=${CUDA_ARCH:-90}
BIN=.gpu-bin
LOG=${OUT:-gpu-logs}
BENCH_MIB=${BENCH_MIB:-1024}
BUILD_DIR=${BUILD_DIR:-build-gpu}

build() {
    local gen=""
    command -v ninja >/dev/null 2>&1 && gen="-G Ninja"
    cmake -S . -B "$BUILD_DIR" $gen -DCMAKE_BUILD_TYPE=Release -DDS4_WERROR=ON -DDS4_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DDS4_BENCH=ON >/dev/null
    cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target test_cuda_kernels ds4-bench-cuda
    mkdir -p "$BIN"
    cp "$BUILD_DIR/bin/test_cuda_kernels" "$BUILD_DIR/bin/ds4-bench-cuda" "$BIN/"
    ldd "$BIN/test_cuda_kernels" | grep -E 'stdc\+\+|gtest|cudart' && {
        echo "gpu-check: test binary still links a shared dev library" >&2
        exit 1
    }
    echo "gpu-check: staged $(ls "$BIN" | tr '\n' ' ')in $BIN/"
}

run() {
    mkdir -p "$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$LOG/card.txt"
    local rc=0
    echo "== tests"
    "$BIN/test_cuda_kernels" --gtest_brief=1 2>&1 | tee "$LOG/tests.txt" || rc=1
    if command -v compute-sanitizer >/dev/null 2>&1; then
        echo "== compute-sanitizer memcheck (kernel tests)"
        timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 \
            "$BIN/test_cuda_kernels" --gtest_brief=1 --gtest_filter='CudaMatmul*:CudaElementwise*:Types/*' \
            >"$LOG/memcheck.txt" 2>&1 && echo "memcheck: clean" || { rc=1; tail -30 "$LOG/memcheck.txt"; }
    fi
    echo "== bench"
    "$BIN/ds4-bench-cuda" "$BENCH_MIB" 2>&1 | tee "$LOG/bench.txt" || rc=1
    return $rc
}

case "$mode" in
    build) build ;;
    run) run ;;
    all) build && run ;;
    *) echo "usage: $0 [build|run|all]" >&2; exit 2 ;;
esac
