#!/usr/bin/env bash
# One device call for the CUDA backend (issue 8): tests + memcheck on the new binaries,
# 4-layer base/new benches and ncu tables, 43-layer ds4-bench figures. Session 7's calls
# in one script, so a session spends its device minutes on one or two calls.
#
#   here:  bench/cuda/run-check.sh stage DIR [BASE_BIN_DIR]   strip build-gpu/bin's binaries
#          into DIR/new.tar.xz (and BASE_BIN_DIR's into DIR/base.tar.xz); DIR must be under
#          the checkout and git-ignored (.gpu-bin*), then run with
#          carry [DIR/new.tar.xz, DIR/base.tar.xz] and command `bench/cuda/run-check.sh run DIR`
#   device: bench/cuda/run-check.sh run DIR   (needs_h200 for the 43-layer model; logs in
#          $OUT/check.tgz). PARTS picks what runs (default "tests bench4 ncu l43"; b64 adds the
#          43-layer run at 64 sequences); a call has 600 s, so tests+bench4+ncu and l43+b64 are two
#          calls on the warm machine. NCU_ROWS=N longer ncu tables; NCU_DETAIL=REGEX full ncu
#          sections of the first NCU_DETAIL_COUNT (4) matching launches of NCU_DETAIL_PASS
#          (b1: a batch-1 step, the default; prefill: a 2048-token pass; b64: 64 sequences)
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-run}
DIR=${2:-.gpu-bin-check}
BINS=(test_cuda_kernels test_cuda_forward ds4-bench-cuda-forward ds4-make-model-static ds4-bench)

stage() {  # DIR SRC NAME
    rm -rf "$1/$3" && mkdir -p "$1/$3"
    for t in "${BINS[@]}"; do strip -o "$1/$3/$t" "$2/$t"; done
    tar cJf "$1/$3.tar.xz" -C "$1" "$3" && rm -rf "${1:?}/$3"
    ls -la "$1/$3.tar.xz"
}

run() {
    local L=${OUT:-/tmp/out}/check M=/tmp/m4.gguf
    mkdir -p "$L"
    (cd "$DIR" && for s in new base; do [ -f $s.tar.xz ] && tar xJf $s.tar.xz; done)
    local N=$DIR/new B=$DIR/base
    local NCU
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$L/card.txt"
    export DS4_TEST_DATA=$PWD/tests/data DS4_DEMO_GGUF=/tmp/demo.gguf
    "$N/ds4-make-model-static" -o /tmp/demo.gguf --shape demo --quant q2 --seed 4 --fast-random-blocks --quiet &
    "$N/ds4-make-model-static" -o $M --shape published --quant q2 --layers 4 --fast-random-blocks --quiet &
    wait
    has() { [[ " ${PARTS:-tests bench4 ncu l43} " == *" $1 "* ]]; }
    if has tests; then
    echo "== tests (new)"
    ("$N/test_cuda_kernels" --gtest_brief=1 > "$L/kernels.txt" 2>&1; echo "kernels rc=$?" >> "$L/kernels.txt") &
    (timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 "$N/test_cuda_kernels" --gtest_brief=1 \
        --gtest_filter='CudaMatmul*:CudaDenseBatch.*:CudaMultiProduct.*:CudaFusedKernels.*:CudaF16Mma.*:CudaAttendSplit.*:CudaMoe.*' \
        > "$L/memcheck.txt" 2>&1
     echo "memcheck rc=$?" >> "$L/memcheck.txt") &
    "$N/test_cuda_forward" --gtest_brief=1 > "$L/forward.txt" 2>&1; echo "forward rc=$?" >> "$L/forward.txt"
    wait
    for f in kernels forward memcheck; do tail -1 "$L/$f.txt"; done
    grep -hE "FAILED|^\[cuda" "$L/kernels.txt" "$L/forward.txt" | head -20
    fi
    if has bench4; then
    echo "== 4 layers: prefill 2048, decode, batch 8 / 64; prefill 8192, decode (base, new)"
    for s in base new; do
        [ -x "$DIR/$s/ds4-bench-cuda-forward" ] || continue
        echo "-- $s"; "$DIR/$s/ds4-bench-cuda-forward" $M 2048 32 8 64 2>&1 | grep -E "^prefill|^decode|^batch"
        "$DIR/$s/ds4-bench-cuda-forward" $M 8192 32 2>&1 | grep -E "^prefill|^decode"
    done | tee "$L/bench4.txt"
    echo "-- new, 64 distinct prompts"
    DS4_BENCH_DISTINCT_PROMPTS=1 "$N/ds4-bench-cuda-forward" $M 64 16 64 2>&1 | grep -E "^batch" | tee -a "$L/bench4.txt"
    fi
    local P="$NCU --profile-from-start off --clock-control none --cache-control none --metrics gpu__time_duration.sum,launch__grid_size --csv --page raw"
    if has ncu; then
    DS4_PROFILE_DECODE=1 timeout 90 $P "$N/ds4-bench-cuda-forward" $M 64 3 > "$L/ncu-b1.csv" 2>/dev/null
    DS4_PROFILE_PREFILL=1 timeout 90 $P "$N/ds4-bench-cuda-forward" $M 2048 1 > "$L/ncu-prefill.csv" 2>/dev/null
    DS4_BENCH_DISTINCT_PROMPTS=1 DS4_PROFILE_BATCH=1 timeout 90 $P "$N/ds4-bench-cuda-forward" $M 64 2 64 > "$L/ncu-b64.csv" 2>/dev/null
    for p in b1 prefill b64; do echo "== ncu $p (new)"; bench/cuda/run-decode.sh ncu-table "$L/ncu-$p.csv" 2>/dev/null | head -"${NCU_ROWS:-12}"; done
    fi
    if [ -n "${NCU_DETAIL:-}" ]; then  # a kernel-name regex: full sections of its first launches
        local penv=DS4_PROFILE_DECODE pargs="64 3"
        case "${NCU_DETAIL_PASS:-b1}" in
            prefill) penv=DS4_PROFILE_PREFILL pargs="2048 1" ;;
            b64) penv=DS4_PROFILE_BATCH pargs="64 2 64" ;;
        esac
        env $penv=1 DS4_BENCH_DISTINCT_PROMPTS=1 timeout 150 $NCU --profile-from-start off -k "regex:$NCU_DETAIL" \
            -c "${NCU_DETAIL_COUNT:-4}" --section SpeedOfLight --section WarpStateStats --section LaunchStats \
            --section Occupancy --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
            --section SchedulerStats --section InstructionStats "$N/ds4-bench-cuda-forward" $M $pargs \
            > "$L/ncu-detail.txt" 2>&1
        echo "== ncu detail: $NCU_DETAIL"; grep -E "^  [a-z_]+.*\(|Duration|Throughput|Stall|Warp Cycles|Registers|Achieved Occ|Block Size|Grid Size|Issue|Eligible|Pipe|Executed Ipc" "$L/ncu-detail.txt" | head -${NCU_DETAIL_LINES:-80}
    fi
    if has l43 || has b64; then
        echo "== 43 layers (new): prefill to 8k, decode at 512 and 8192"
        has l43 && timeout 240 "$N/ds4-bench" --cuda --synthetic q2 --layers 43 --ctx-start 512 --ctx-max 8192 --step-mul 16 \
            --gen-tokens 16 2>&1 | tail -4 | tee "$L/b43.txt"
        if has b64; then
            timeout 240 "$N/ds4-bench" --cuda --synthetic q2 --layers 43 --ctx-start 512 --ctx-max 512 --batch 64 --gen-warmup 2 \
                --gen-tokens 32 2>&1 | tail -3 | tee "$L/b43-64.txt"
        fi
    fi
    (cd "$L/.." && tar czf check.tgz check && rm -rf check)
}

case "$mode" in
    stage) stage "$DIR" build-gpu/bin new; [ -n "${3:-}" ] && stage "$DIR" "$3" base; true ;;
    run) run ;;
    *) echo "usage: $0 stage DIR [BASE_BIN_DIR] | run DIR" >&2; exit 2 ;;
esac
