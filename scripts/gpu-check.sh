#!/usr/bin/env bash
# GPU check for the CUDA backend (issue 8), in one go: build, test, benchmark.
#
#   scripts/gpu-check.sh build     configure + build the GPU binaries (build-gpu/,
#                                  CUDA_ARCH=90 by default), then stage them
#   scripts/gpu-check.sh stage     copy the GPU binaries already built in $BUILD_DIR to
#                                  .gpu-bin/ (with the demo model, when it exists)
#   scripts/gpu-check.sh run       on the GPU host: run the staged binaries (kernel tests,
#                                  forward tests (goldens + engine vs CPU), compute-sanitizer
#                                  memcheck, then the benches); logs go to $OUT (or
#                                  ./gpu-logs) as well as stdout
#   scripts/gpu-check.sh           build + run (a host that has the dev libraries and a GPU)
#
# The GPU host has nvcc but no GoogleTest, so the binaries are built where the dev
# libraries are (statically linked libstdc++/libgcc; cudart is static) and carried over:
# pass `carry: [".gpu-bin"]` to the device run. FULL_LAYERS=N (run) also generates a
# full-width synthetic q2 model of N layers on the GPU host and benches it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
CUDA_ARCH=${CUDA_ARCH:-90}
BIN=${GPU_BIN:-.gpu-bin}
LOG=${OUT:-gpu-logs}
BENCH_MIB=${BENCH_MIB:-1024}
BUILD_DIR=${BUILD_DIR:-build-gpu}
TARGETS=(test_cuda_kernels ds4-bench-cuda test_cuda_forward ds4-bench-cuda-forward ds4-make-model-static)

stage() {
    mkdir -p "$BIN"
    for t in "${TARGETS[@]}"; do
        if [ -x "$BUILD_DIR/bin/$t" ]; then strip -o "$BIN/$t" "$BUILD_DIR/bin/$t"; fi
    done
    for demo in "$BUILD_DIR/ds4-demo.gguf" build/ds4-demo.gguf; do
        if [ -f "$demo" ]; then cp "$demo" "$BIN/ds4-demo.gguf"; break; fi
    done
    for b in "$BIN"/*; do
        [ -x "$b" ] || continue
        if ldd "$b" | grep -E 'stdc\+\+|gtest|cudart'; then
            echo "gpu-check: $b still links a shared dev library" >&2
            exit 1
        fi
    done
    echo "gpu-check: staged $(ls "$BIN" | tr '\n' ' ')in $BIN/"
}

build() {
    local gen=""
    command -v ninja >/dev/null 2>&1 && gen="-G Ninja"
    cmake -S . -B "$BUILD_DIR" $gen -DCMAKE_BUILD_TYPE=Release -DDS4_WERROR=ON -DDS4_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DDS4_BENCH=ON >/dev/null
    cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target "${TARGETS[@]}"
    stage
}

# step NAME COMMAND...: runs one step, logs to $LOG/NAME.txt, remembers a failure.
rc=0
step() {
    local name=$1
    shift
    echo "== $name"
    if "$@" >"$LOG/$name.txt" 2>&1; then
        tail -n "${TAIL:-6}" "$LOG/$name.txt"
    else
        echo "FAILED ($name):"
        tail -40 "$LOG/$name.txt"
        rc=1
    fi
}

run() {
    mkdir -p "$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$LOG/card.txt"
    export DS4_TEST_DATA=$PWD/tests/data DS4_DEMO_GGUF=$PWD/$BIN/ds4-demo.gguf
    [ -x "$BIN/test_cuda_kernels" ] && step kernel-tests "$BIN/test_cuda_kernels" --gtest_brief=1
    if [ -x "$BIN/test_cuda_forward" ]; then
        TAIL=40 step forward-tests "$BIN/test_cuda_forward" --gtest_brief=1
        grep -h '^\[cuda' "$LOG/forward-tests.txt" || true
    fi
    if command -v compute-sanitizer >/dev/null 2>&1; then
        [ -x "$BIN/test_cuda_kernels" ] && step memcheck-kernels timeout 300 compute-sanitizer --tool memcheck \
            --error-exitcode 9 "$BIN/test_cuda_kernels" --gtest_brief=1 \
            --gtest_filter='CudaMatmul*:CudaElementwise*:Types/*:CudaMultiProduct.*:CudaFusedKernels.*:CudaIndexerFast*:CudaAttendSplit*:CudaDenseBatch.*:CudaWgmma.*:CudaExpertsWgmma.*:CudaWeights.*'
        [ -x "$BIN/test_cuda_forward" ] && step memcheck-forward timeout 300 compute-sanitizer --tool memcheck \
            --error-exitcode 9 "$BIN/test_cuda_forward" --gtest_brief=1 \
            --gtest_filter='Goldens/CudaGolden.PrefillThenDecode*/tiny_s1:CudaEngine.Splits*:*CudaBatchAttn*:CudaBatchIndexerMma.*:CudaMmaExperts.*:CudaQ8Experts.*:CudaEngine.LongPass*'
    fi
    [ -x "$BIN/ds4-bench-cuda" ] && step bench-matmul "$BIN/ds4-bench-cuda" "$BENCH_MIB"
    if [ -x "$BIN/ds4-bench-cuda-forward" ] && [ -f "$BIN/ds4-demo.gguf" ]; then
        step bench-forward-demo "$BIN/ds4-bench-cuda-forward" "$BIN/ds4-demo.gguf" 512 64 8 32 64
    fi
    if [ -n "${FULL_LAYERS:-}" ] && [ -x "$BIN/ds4-make-model-static" ]; then
        local full=/tmp/ds4-full-${FULL_LAYERS}.gguf
        step make-full "$BIN/ds4-make-model-static" -o "$full" --shape published --quant q2 \
            --layers "$FULL_LAYERS" --fast-random-blocks --quiet
        step bench-forward-full "$BIN/ds4-bench-cuda-forward" "$full" "${FULL_PROMPT:-256}" "${FULL_DECODE:-32}" \
            ${FULL_BATCHES:-8 32 64}
        # the real kernel timeline of 4 batch-1 decode steps (CUPTI; tests/cuda/kernel_trace.h)
        : "${DS4_CUPTI:=$(find / -name 'libcupti.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)}"
        if [ -n "$DS4_CUPTI" ]; then
            DS4_CUPTI=$DS4_CUPTI DS4_TRACE_DECODE=4 step trace-decode-full "$BIN/ds4-bench-cuda-forward" "$full" 64 16
        fi
    fi
    return $rc
}

case "$mode" in
    build) build ;;
    stage) stage ;;
    run) run ;;
    all) build && run ;;
    *) echo "usage: $0 [build|stage|run|all]" >&2; exit 2 ;;
esac
