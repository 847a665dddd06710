#!/bin/bash
# Device run of branch cuda-q8-experts (issue 8), in ONE call: q8 expert tests, decode
# benches base/new (4-layer full-width q2, twice each), ncu of 2 decode steps base/new
# and the q8 kernel's occupancy / DRAM figures, full test suites + memcheck of the new
# tests (new), 43-layer ds4-bench base/new. $B holds new.tar.xz and base.tar.xz
# (stripped binaries); logs under $OUT.
set -u
B=${B:-.gpu-bin-cuda-q8-experts}; LOG=${OUT:-/tmp/out}; mkdir -p $LOG
(cd $B && mkdir -p new base && tar xJf new.tar.xz -C new && tar xJf base.tar.xz -C base) || exit 3
N=$B/new; BASE=$B/base
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $LOG/card.txt; cat $LOG/card.txt
export DS4_TEST_DATA=$PWD/tests/data
M=/tmp/m4.gguf; D=/tmp/demo.gguf
$N/ds4-make-model-static -o $D --shape demo --quant q2 --seed 4 --fast-random-blocks --quiet &
$N/ds4-make-model-static -o $M --shape published --quant q2 --layers 4 --fast-random-blocks --quiet &
wait
export DS4_DEMO_GGUF=$D
S=$LOG/summary.txt
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
{
echo "== q8 expert kernel tests (new)"; timeout 60 $N/test_cuda_kernels --gtest_filter='CudaMatmulQ8Experts.*:CudaMatmulMmaExperts.*' > $LOG/kx.txt 2>&1; echo rc=$?; grep -E "experts|FAIL|PASSED|Failure|error" $LOG/kx.txt | head -30
echo "== forward q8 test (new)"; timeout 60 $N/test_cuda_forward --gtest_brief=1 --gtest_filter='CudaQ8Experts*:CudaMmaExperts*:CudaEngine.Batch*' > $LOG/fx.txt 2>&1; echo rc=$?; grep -E "FAIL|\[cuda|tests" $LOG/fx.txt | head
for rep in 1 2; do for set in base:$BASE new:$N; do n=${set%%:*}; d=${set#*:}
  echo "== $n #$rep 256 64 8"; timeout 40 $d/ds4-bench-cuda-forward $M 256 64 8 2>&1 | grep -E "^prefill|^decode|^batch"
done; done
echo "== new DS4_CUDA_Q8_EXPERTS=0 256 64 8"; DS4_CUDA_Q8_EXPERTS=0 timeout 40 $N/ds4-bench-cuda-forward $M 256 64 8 2>&1 | grep -E "^decode|^batch"
} 2>&1 | tee $S
for set in base:$BASE new:$N; do n=${set%%:*}; d=${set#*:}
  DS4_PROFILE_DECODE=2 timeout 60 $NCU --profile-from-start off --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --csv --page raw $d/ds4-bench-cuda-forward $M 64 8 \
    > $LOG/ncu-$n.csv 2> $LOG/ncu-$n.err; echo "ncu $n rc=$?" | tee -a $S
  bench/cuda/run-decode.sh ncu-table $LOG/ncu-$n.csv 2>&1 | head -40 | tee -a $S
  python3 - $LOG/ncu-$n.csv <<'PY' 2>&1 | tee -a $S
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if 'Kernel Name' in r)
h = rows[hdr]; k = h.index('Kernel Name'); m = h.index('gpu__time_duration.sum'); gi = h.index('launch__grid_size')
unit = rows[hdr + 1][m]; scale = {'ns': 1e-3, 'usecond': 1, 'us': 1, 'msecond': 1e3, 'nsecond': 1e-3}.get(unit, 1e-3)
tot = collections.defaultdict(list)
for r in rows[hdr + 1:]:
    try: v = float(r[m].replace(',', ''))
    except (ValueError, IndexError): continue
    if 'xperts' in r[k] or 'quantize_q8' in r[k]: tot[(r[k].split('(')[0][:90], r[gi])].append(v * scale)
for (name, g), vs in sorted(tot.items()):
    print(f"  per call {sum(vs)/len(vs):7.1f} us  min {min(vs):6.1f} max {max(vs):6.1f}  n={len(vs):3d} grid {g:>6}  {name}")
PY
done
echo "== ncu q8_experts_kernel metrics (new)" | tee -a $S
DS4_PROFILE_DECODE=1 timeout 60 $NCU --profile-from-start off --clock-control none --cache-control none --kernel-name regex:q8_experts \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size,launch__occupancy_limit_registers,smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio \
  --csv --page raw $N/ds4-bench-cuda-forward $M 64 8 > $LOG/ncu-q8m.csv 2> $LOG/ncu-q8m.err; echo "rc=$?" | tee -a $S
python3 - $LOG/ncu-q8m.csv <<'PY' 2>&1 | tee -a $S
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if 'Kernel Name' in r)
h = rows[hdr]; cols = [c for c in h if '__' in c]
print(' | '.join(c.split('.')[0][-28:] for c in cols))
for r in rows[hdr + 2:hdr + 12]:
    print(r[h.index('Kernel Name')][:60].split('(')[0], ' | '.join(r[h.index(c)] for c in cols))
PY
{
echo "== full tests + memcheck (new), concurrently"
( timeout 150 $N/test_cuda_kernels --gtest_brief=1 > $LOG/kt.txt 2>&1; echo "kernels rc=$?" > $LOG/kt.rc ) &
( timeout 150 $N/test_cuda_forward --gtest_brief=1 > $LOG/ft.txt 2>&1; echo "forward rc=$?" > $LOG/ft.rc ) &
( timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $N/test_cuda_kernels --gtest_filter='CudaMatmulQ8Experts.*' > $LOG/memcheck.txt 2>&1; echo "memcheck rc=$?" > $LOG/mc.rc ) &
wait
cat $LOG/kt.rc $LOG/ft.rc $LOG/mc.rc; tail -3 $LOG/kt.txt; tail -3 $LOG/ft.txt; grep -E "FAILED|\[cuda" $LOG/ft.txt $LOG/kt.txt | head -30; tail -3 $LOG/memcheck.txt
for set in base:$BASE new:$N; do n=${set%%:*}; d=${set#*:}
  echo "== $n ds4-bench 43 layers"; timeout 150 $d/ds4-bench --cuda --synthetic q2 --layers 43 --ctx-start 512 --ctx-max 512 --gen-tokens 32 > $LOG/b43-$n.txt 2>&1; echo rc=$?; tail -4 $LOG/b43-$n.txt
done
} 2>&1 | tee -a $S
cd $LOG && tar czf logs.tgz *.txt *.csv *.err *.rc 2>/dev/null; ls $LOG
