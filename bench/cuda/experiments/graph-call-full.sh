#!/usr/bin/env bash
# (Staged as .gpu-bin-graph/run3.sh in the main checkout; see bench/RESULTS.md.)
# cuda-graph branch, third call: test_cuda_forward (all) + memcheck of the graph tests on
# the new binaries, then the whole 43-layer q2 shape, ds4-bench --cuda, base (df58f23)
# vs new (graphs on), logs tarred into $OUT.
set -uo pipefail
G=.gpu-bin-graph
{ xz -dc $G/bins.tar.xz | tar xf - -C $G || python3 -c "import tarfile; tarfile.open('$G/bins.tar.xz').extractall('$G')"; } && chmod +x $G/base-bin/* $G/new/*
L=$OUT/logs; mkdir -p "$L"
export DS4_TEST_DATA=$PWD/tests/data DS4_DEMO_GGUF=$PWD/$G/new/ds4-demo.gguf
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$L/card.txt"
$G/new/ds4-make-model-static -o $DS4_DEMO_GGUF --shape demo --quant q2 --seed 4 --fast-random-blocks --quiet
$G/new/test_cuda_forward --gtest_brief=1 >"$L/forward-tests.txt" 2>&1; tail -n 3 "$L/forward-tests.txt"
grep -h '^\[cuda graph' "$L/forward-tests.txt"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $G/new/test_cuda_forward --gtest_brief=1 \
    --gtest_filter='CudaGraph.*' >"$L/memcheck-graph.txt" 2>&1 && echo "memcheck (CudaGraph.*) clean" || tail -8 "$L/memcheck-graph.txt"
for set in base-bin new; do
    echo "== $set: ds4-bench --cuda --synthetic q2 --layers 43"
    timeout 220 $G/$set/ds4-bench --cuda --synthetic q2 --layers 43 --ctx-start 512 --ctx-max 512 --gen-tokens 64 \
        --csv "$L/full-$set.csv" >"$L/full-$set.txt" 2>&1; grep -h "ctx \|ceiling\|load_s" "$L/full-$set.txt" | cut -c1-400
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
