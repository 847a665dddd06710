#!/usr/bin/env bash
# Matvec speed check (issue 8, fast path), in one device call: tests, compute-sanitizer
# memcheck on the matvec kernels, then ds4-bench-cuda with the copy ceiling.
#
#   bench/cuda/run-perf.sh build   here (dev libraries): build the test binaries and the
#                                  bench in $BUILD_DIR (build-cudaperf) and stage them in
#                                  $BUILD_DIR/perf-bin (carry that path to the GPU host)
#   bench/cuda/run-perf.sh run     on the GPU host: run the staged binaries; logs under
#                                  $OUT (or ./perf-logs) and on stdout
#   bench/cuda/run-perf.sh stage-base   here, before changing the kernels: copy the staged
#                                  bench to $BUILD_DIR/perf-base; carry that path too and
#                                  `run` benches it first, on the same card (before/after
#                                  of one call; timings from different machines don't compare)
#
# Same approach as scripts/gpu-check.sh (static libstdc++/cudart, built here, run there).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-run}
BUILD_DIR=${BUILD_DIR:-build-cudaperf}
BIN=$BUILD_DIR/perf-bin
BASE=$BUILD_DIR/perf-base
LOG=${OUT:-perf-logs}
BENCH_MIB=${BENCH_MIB:-1024}

build() {
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDS4_WERROR=ON -DDS4_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DDS4_BENCH=ON >/dev/null
    cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target test_cuda_matmul_q8 ds4-bench-cuda
    mkdir -p "$BIN"
    cp "$BUILD_DIR/bin/test_cuda_matmul_q8" "$BUILD_DIR/bin/ds4-bench-cuda" "$BIN/"
    # the exact kernels' own tests, when that target builds at this moment
    if cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target test_cuda_kernels; then
        cp "$BUILD_DIR/bin/test_cuda_kernels" "$BIN/"
    fi
    strip "$BIN"/*
    echo "run-perf: staged $(ls "$BIN" | tr '\n' ' ')in $BIN/ ($(du -sh "$BIN" | cut -f1))"
}

run() {
    mkdir -p "$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$LOG/card.txt"
    local rc=0
    echo "== tests"
    "$BIN/test_cuda_matmul_q8" --gtest_brief=1 2>&1 | tee "$LOG/tests.txt" || rc=1
    if [[ -x $BIN/test_cuda_kernels ]]; then
        "$BIN/test_cuda_kernels" --gtest_brief=1 --gtest_filter='*Matmul*' 2>&1 | tee -a "$LOG/tests.txt" || rc=1
    fi
    if command -v compute-sanitizer >/dev/null 2>&1; then
        echo "== compute-sanitizer memcheck (fast matvec tests)"
        timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/test_cuda_matmul_q8" --gtest_brief=1 \
            >"$LOG/memcheck.txt" 2>&1 && echo "memcheck: clean" || { rc=1; tail -30 "$LOG/memcheck.txt"; }
    fi
    if [[ -x $BASE/ds4-bench-cuda ]]; then
        echo "== bench, baseline ($BASE)"
        "$BASE/ds4-bench-cuda" "$BENCH_MIB" 2>&1 | tee "$LOG/bench-base.txt" || rc=1
    fi
    echo "== bench"
    "$BIN/ds4-bench-cuda" "$BENCH_MIB" 2>&1 | tee "$LOG/bench.txt" || rc=1
    return $rc
}

stage_base() {
    [[ -x $BIN/ds4-bench-cuda ]] || { echo "run-perf: nothing staged in $BIN (run build first)" >&2; exit 1; }
    mkdir -p "$BASE"
    cp "$BIN/ds4-bench-cuda" "$BASE/"
    echo "run-perf: baseline bench in $BASE/"
}

case "$mode" in
    build) build ;;
    run) run ;;
    stage-base) stage_base ;;
    *) echo "usage: $0 build|run|stage-base" >&2; exit 2 ;;
esac
