#!/usr/bin/env bash
# Batched attend tile kernel (issue 8) before/after in ONE device call: the bitwise
# CudaBatchAttn tests (tile and per-head kernels), the forward / kernel tests, then
# ds4-bench-cuda-forward on the 4-layer full-width q2 model for the baseline ($BASE) and
# the new binaries (8192-, 2048- and 256-token prompts; new with DS4_CUDA_ATTN_TILE=0;
# batch 1 with DS4_CUDA_BATCH_ATTN=all), then, while time is left, ncu tables of the
# prefill's attention kernels. All output goes to $OUT/log.txt and $OUT/ncu-*.csv.
set -uo pipefail
B=${GPU_BIN:-.gpu-bin-attn-tile/new}
BASE=${BASE:-.gpu-bin-attn-tile/base}
L=${OUT:-perf-logs}
mkdir -p "$L"
exec > >(tee -a "$L/log.txt") 2>&1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
export DS4_TEST_DATA=$PWD/tests/data DS4_DEMO_GGUF=/tmp/demo.gguf
"$B/ds4-make-model-static" -o /tmp/demo.gguf --shape demo --quant q2 --seed 4 --fast-random-blocks --quiet
"$B/ds4-make-model-static" -o /tmp/m.gguf --shape published --quant q2 --layers 4 --fast-random-blocks --quiet &
gen=$!
stage() { echo "== [$SECONDS s] $*"; }
stage "CudaBatchAttn (tile / per_head)"
timeout 100 "$B/test_cuda_forward" --gtest_filter='*CudaBatchAttn*' 2>&1 | grep -E '^\[|batch attn|Failure|differ' | tail -14
wait $gen
bench() {  # NAME DIR ARGS...
    local name=$1 dir=$2
    shift 2
    stage "bench $name: $*"
    timeout 100 "$dir/ds4-bench-cuda-forward" /tmp/m.gguf "$@" 2>&1 | grep -vE '^routed|^card' | tail -8
}
bench base "$BASE" 8192 8 32 64
bench new "$B" 8192 8 32 64
bench base "$BASE" 2048 16 32 64
bench new "$B" 2048 16 32 64
DS4_CUDA_ATTN_TILE=0 bench new-tile-off "$B" 2048 16 32 64
bench base "$BASE" 256 64 8 32
bench new "$B" 256 64 8 32
DS4_CUDA_BATCH_ATTN=all bench new-all "$B" 256 64 8 32
stage "test_cuda_forward (all)"
timeout 150 "$B/test_cuda_forward" 2>&1 | grep -E '^\[  (PASSED|FAILED) |^\[==========\]|Failure|FAILED' | tail -12
stage "test_cuda_kernels (all)"
timeout 90 "$B/test_cuda_kernels" 2>&1 | grep -E '^\[  (PASSED|FAILED) |^\[==========\]|FAILED' | tail -6
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
ncu_csv() {  # OUTFILE NCU-ARGS... COMMAND...
    local out=$1
    shift
    timeout 60 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum,launch__grid_size \
        --csv --page raw "$@" >"$L/$out" 2>"/tmp/$out.err" || tail -3 "/tmp/$out.err"
}
if [ -n "$NCU" ] && [ "$SECONDS" -lt "${PROFILE_BEFORE_S:-300}" ]; then
    stage "ncu: the attention kernels of a 2048-token prefill, new / base"
    ncu_csv ncu-prefill-new.csv -k 'regex:attend' "$B/ds4-bench-cuda-forward" /tmp/m.gguf 2048 1
    ncu_csv ncu-prefill-base.csv -k 'regex:attend' "$BASE/ds4-bench-cuda-forward" /tmp/m.gguf 2048 1
fi
if [ -n "$NCU" ] && [ "$SECONDS" -lt "${PROFILE_BEFORE_S:-330}" ]; then
    stage "ncu: 2 batch-1 decode steps' attention kernels, DS4_CUDA_BATCH_ATTN=all (new) / default (new)"
    DS4_CUDA_BATCH_ATTN=all DS4_PROFILE_DECODE=2 ncu_csv ncu-dec-all.csv --profile-from-start off -k 'regex:attend' \
        "$B/ds4-bench-cuda-forward" /tmp/m.gguf 256 8
    DS4_PROFILE_DECODE=2 ncu_csv ncu-dec-new.csv --profile-from-start off -k 'regex:attend' \
        "$B/ds4-bench-cuda-forward" /tmp/m.gguf 256 8
fi
stage "done"
