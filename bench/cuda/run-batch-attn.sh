#!/usr/bin/env bash
# Batched attention (issue 8) before/after in ONE device call: the new bitwise test, the
# forward / kernel tests and a compute-sanitizer memcheck of the new test on the new
# binaries, then ds4-bench-cuda-forward on the 4-layer full-width q2 model for the
# baseline ($BASE), the new binaries and the new ones with DS4_CUDA_BATCH_ATTN=0; with
# PROFILE=1 (default, while under PROFILE_BEFORE_S seconds have passed) ncu CSVs of
# batch-1 decode steps and of the batched kernels of a 2048-token prefill.
# All output goes to $OUT/log.txt and $OUT/ncu-*.csv.
set -uo pipefail
# run from the repository root (the device call starts there)
B=${GPU_BIN:-.gpu-bin-cuda-batch-attn}
BASE=${BASE:-.gpu-bin-base}
L=${OUT:-perf-logs}
mkdir -p "$L"
exec > >(tee -a "$L/log.txt") 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
export DS4_TEST_DATA=$PWD/tests/data DS4_DEMO_GGUF=/tmp/demo.gguf
"$B/ds4-make-model-static" -o /tmp/demo.gguf --shape demo --quant q2 --seed 4 --fast-random-blocks --quiet
"$B/ds4-make-model-static" -o /tmp/m.gguf --shape published --quant q2 --layers 4 --fast-random-blocks --quiet &
gen=$!
stage() { echo "== [$SECONDS s] $*"; }
stage "new test: CudaBatchAttn"
timeout 90 "$B/test_cuda_forward" --gtest_filter='CudaBatchAttn.*' 2>&1 | grep -E '^\[|batch attn|Failure|differ' | tail -12
wait $gen
bench() {  # NAME DIR ARGS...
    local name=$1 dir=$2
    shift 2
    stage "bench $name: $*"
    timeout 90 "$dir/ds4-bench-cuda-forward" /tmp/m.gguf "$@" 2>&1 | grep -vE '^routed|^card' | tail -8
}
bench base "$BASE" 2048 16 32 64
bench new "$B" 2048 16 32 64
DS4_CUDA_BATCH_ATTN=0 bench new-off "$B" 2048 16 32 64
stage "test_cuda_forward (all)"
timeout 150 "$B/test_cuda_forward" 2>&1 | grep -E '^\[  (PASSED|FAILED) |^\[==========\]|Failure|FAILED' | tail -12
stage "test_cuda_kernels (all)"
timeout 90 "$B/test_cuda_kernels" 2>&1 | grep -E '^\[  (PASSED|FAILED) |^\[==========\]|FAILED' | tail -6
bench base "$BASE" 256 64 8 32
bench new "$B" 256 64 8 32
DS4_CUDA_BATCH_ATTN=all bench new-all "$B" 256 64 8 32
stage "compute-sanitizer memcheck CudaBatchAttn.*"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
timeout 120 "$SAN" --tool memcheck "$B/test_cuda_forward" --gtest_filter='CudaBatchAttn.*' 2>&1 | grep -E 'ERROR SUMMARY|^\[  (PASSED|FAILED)|Invalid|batch attn' | tail -8
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
ncu_csv() {  # OUTFILE NCU-ARGS... COMMAND...
    local out=$1
    shift
    timeout 120 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum,launch__grid_size \
        --csv --page raw "$@" >"$L/$out" 2>"/tmp/$out.err" || tail -3 "/tmp/$out.err"
}
if [ "${PROFILE:-1}" = 1 ] && [ -n "$NCU" ] && [ "$SECONDS" -lt "${PROFILE_BEFORE_S:-250}" ]; then
    # per-kernel times, tabled on the dev machine (bench/cuda/run-decode.sh ncu-table)
    stage "ncu: last 2 decode steps at batch 1, base / new (per-token at one token) / new with DS4_CUDA_BATCH_ATTN=all"
    DS4_PROFILE_DECODE=2 ncu_csv ncu-dec-base.csv --profile-from-start off "$BASE/ds4-bench-cuda-forward" /tmp/m.gguf 256 8
    DS4_PROFILE_DECODE=2 ncu_csv ncu-dec-new.csv --profile-from-start off "$B/ds4-bench-cuda-forward" /tmp/m.gguf 256 8
    DS4_CUDA_BATCH_ATTN=all DS4_PROFILE_DECODE=2 ncu_csv ncu-dec-all.csv --profile-from-start off \
        "$B/ds4-bench-cuda-forward" /tmp/m.gguf 256 8
    stage "ncu: the batched attention kernels of a 2048-token prefill (new)"
    ncu_csv ncu-prefill-new.csv -k 'regex:emit_kernel|batch_|finish_kernel' "$B/ds4-bench-cuda-forward" /tmp/m.gguf 2048 1
fi
stage "done"
