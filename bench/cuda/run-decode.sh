#!/usr/bin/env bash
# Decode-speed check of the CUDA forward pass (issue 8), before/after in ONE device call:
# the full-width synthetic q2 model (FULL_LAYERS layers, generated on the GPU host), the
# forward tests + a compute-sanitizer subset on the new binaries, then for the baseline
# and the new binaries: ds4-bench-cuda-forward (wall clock), ncu per-kernel times of the
# last PROF_STEPS decode steps (DS4_PROFILE_DECODE), and ds4-bench --cuda with the copy
# ceiling of the same run.
#
#   bench/cuda/run-decode.sh stage-base   here: copy the binaries built in $BUILD_DIR
#                                         (build-gpu) to $BUILD_DIR/base-bin (carry it)
#   bench/cuda/run-decode.sh stage        here: the same into .gpu-bin (carry it)
#   bench/cuda/run-decode.sh run          on the GPU host; logs and ncu CSVs under $OUT
#   bench/cuda/run-decode.sh ncu-table CSV   here: per-kernel totals of an ncu raw CSV
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-run}
BUILD_DIR=${BUILD_DIR:-build-gpu}
BASE=$BUILD_DIR/base-bin
BIN=${GPU_BIN:-.gpu-bin}
LOG=${OUT:-perf-logs}
FULL_LAYERS=${FULL_LAYERS:-4}
PROF_STEPS=${PROF_STEPS:-2}
NCU_SETS=${NCU_SETS:-base new}  # the sets profiled with ncu
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || echo ncu)
TARGETS=(test_cuda_kernels test_cuda_forward ds4-bench-cuda-forward ds4-make-model-static ds4-bench)

stage_to() {
    mkdir -p "$1"
    for t in "${TARGETS[@]}"; do
        [ -x "$BUILD_DIR/bin/$t" ] && strip -o "$1/$t" "$BUILD_DIR/bin/$t"
    done
    [ -f "$BUILD_DIR/ds4-demo.gguf" ] && cp "$BUILD_DIR/ds4-demo.gguf" "$1/"
    echo "run-decode: staged $(ls "$1" | tr '\n' ' ')in $1"
}

bench_set() {  # NAME DIR MODEL
    local name=$1 dir=$2 model=$3
    echo "== $name: ds4-bench-cuda-forward"
    "$dir/ds4-bench-cuda-forward" "$model" 256 64 8 32 2>&1 | tee "$LOG/fwd-$name.txt" | grep -E 'decode|batch'
    [[ " $NCU_SETS " == *" $name "* ]] || return 0
    echo "== $name: ncu, last $PROF_STEPS decode steps"
    DS4_PROFILE_DECODE=$PROF_STEPS timeout 240 "$NCU" --profile-from-start off --clock-control none --cache-control none \
        --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --csv --page raw "$dir/ds4-bench-cuda-forward" "$model" 64 8 \
        >"$LOG/ncu-$name.csv" 2>"$LOG/ncu-$name.err" || tail -5 "$LOG/ncu-$name.err"
    if [ -x "$dir/ds4-bench" ]; then
        echo "== $name: ds4-bench --cuda"
        "$dir/ds4-bench" --cuda --synthetic q2 --layers "$FULL_LAYERS" --ctx-start 512 --ctx-max 512 \
            --gen-tokens 32 --csv "$LOG/bench-$name.csv" 2>&1 | tee "$LOG/bench-$name.txt" | tail -4
    fi
}

run() {
    mkdir -p "$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$LOG/card.txt"
    export DS4_TEST_DATA=$PWD/tests/data DS4_DEMO_GGUF=$PWD/$BIN/ds4-demo.gguf
    local rc=0 model=/tmp/ds4-full-$FULL_LAYERS.gguf
    # the demo shape, made here when not carried (synthetic 512-token vocabulary)
    [ -f "$BIN/ds4-demo.gguf" ] || "$BIN/ds4-make-model-static" -o "$BIN/ds4-demo.gguf" --shape demo --quant q2 \
        --seed 4 --fast-random-blocks --quiet
    "$BIN/ds4-make-model-static" -o "$model" --shape published --quant q2 --layers "$FULL_LAYERS" \
        --fast-random-blocks --quiet || rc=1
    echo "== tests (new)"
    "$BIN/test_cuda_forward" --gtest_brief=1 >"$LOG/forward-tests.txt" 2>&1 || rc=1
    tail -3 "$LOG/forward-tests.txt"; grep -h '^\[cuda' "$LOG/forward-tests.txt" | head -20
    "$BIN/test_cuda_kernels" --gtest_brief=1 >"$LOG/kernel-tests.txt" 2>&1 || rc=1
    tail -3 "$LOG/kernel-tests.txt"
    echo "== memcheck (new)"
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/test_cuda_forward" --gtest_brief=1 \
        --gtest_filter='CudaEngine.BatchOfSequencesMatchesOneByOne:Goldens/CudaGolden.PrefillThenDecode*/tiny_s1' \
        >"$LOG/memcheck.txt" 2>&1 && echo "memcheck clean" || { rc=1; tail -15 "$LOG/memcheck.txt"; }
    [ -x "$BASE/ds4-bench-cuda-forward" ] && bench_set base "$BASE" "$model"
    # more baselines: EXTRA_SETS="NAME:DIR ..." (bench-forward only)
    for set in ${EXTRA_SETS:-}; do bench_set "${set%%:*}" "${set#*:}" "$model"; done
    bench_set new "$BIN" "$model"
    for n in base new; do [ -s "$LOG/ncu-$n.csv" ] && { echo "== ncu $n"; ncu_table "$LOG/ncu-$n.csv" | head -90; }; done
    return $rc
}

# Per-kernel totals (µs over the profiled steps), count, share; the sum at the end.
ncu_table() {
    python3 - "$1" <<'EOF'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if 'Kernel Name' in r)
h = rows[hdr]; k = h.index('Kernel Name'); m = h.index('gpu__time_duration.sum')
unit = rows[hdr + 1][m] if hdr + 1 < len(rows) else 'ns'
scale = {'ns': 1e-3, 'usecond': 1, 'us': 1, 'msecond': 1e3, 'nsecond': 1e-3}.get(unit, 1e-3)
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[hdr + 1:]:
    try: v = float(r[m].replace(',', ''))
    except ValueError: continue
    name = r[k].split('(')[0].split('<')[0].replace('ds4::cuda::', '').replace('(anonymous namespace)::', '')
    tot[name] += v * scale; cnt[name] += 1
s = sum(tot.values())
for name, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"{v:10.1f} us {cnt[name]:6d}x {100 * v / s:5.1f}%  {name}")
print(f"{s:10.1f} us {sum(cnt.values()):6d} kernels  (sum of kernel time)")
# the launches of the last profiled step that took >= 8 us, in order, with their grid
if 'launch__grid_size' in h:
    gi = h.index('launch__grid_size')
    data = [r for r in rows[hdr + 1:] if len(r) > m and r[m].replace(',', '').replace('.', '').isdigit()]
    for r in data[len(data) // 2:]:
        v = float(r[m].replace(',', '')) * scale
        if v >= 8: print(f"  {v:8.1f} us  grid {r[gi]:>8}  {r[k].split('(')[0][:60]}")
EOF
}

case "$mode" in
    stage-base) stage_to "$BASE" ;;
    stage) stage_to "$BIN" ;;
    run) run ;;
    ncu-table) ncu_table "$2" ;;
    *) echo "usage: $0 stage-base|stage|run|ncu-table CSV" >&2; exit 2 ;;
esac
