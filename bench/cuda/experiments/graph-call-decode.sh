#!/usr/bin/env bash
# (Staged as .gpu-bin-graph/run.sh in the main checkout with bins.tar.xz = base-bin/ + new/
# stripped binaries and nograph/ wrappers that set DS4_CUDA_GRAPH=0; see bench/RESULTS.md.)
# cuda-graph branch, one device call: tests + memcheck on the new binaries, then
# bench/cuda/run-decode.sh's before/after (base = df58f23) plus the new binaries with
# DS4_CUDA_GRAPH=0 (bench-forward only), logs tarred into $OUT.
set -uo pipefail
G=.gpu-bin-graph
{ xz -dc $G/bins.tar.xz | tar xf - -C $G || python3 -c "import tarfile; tarfile.open('$G/bins.tar.xz').extractall('$G')"; } && chmod +x $G/base-bin/* $G/new/* $G/nograph/*
cp $G/new/ds4-make-model-static $G/base-bin/ 2>/dev/null
mkdir -p "$OUT/logs"
export DS4_TEST_DATA=$PWD/tests/data
start=$(date +%s)
BUILD_DIR=$G GPU_BIN=$G/new OUT=$OUT/logs EXTRA_SETS="nograph:$G/nograph" timeout 470 bash bench/cuda/run-decode.sh run
rc=$?
echo "== memcheck (graph tests)"
DS4_DEMO_GGUF=$PWD/$G/new/ds4-demo.gguf timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 \
    $G/new/test_cuda_forward --gtest_brief=1 \
    --gtest_filter='CudaGraph.BatchOfSequencesMatchesEagerBitwise' \
    >"$OUT/logs/memcheck-graph.txt" 2>&1 && echo "memcheck (graph) clean" || tail -15 "$OUT/logs/memcheck-graph.txt"
grep -h '^\[cuda graph' "$OUT/logs/forward-tests.txt"
for f in "$OUT"/logs/fwd-*.txt; do echo "== $f"; grep -E "decode|batch" "$f"; done
grep -h "gen " "$OUT"/logs/bench-*.txt
tail -n 3 "$OUT"/logs/forward-tests.txt "$OUT"/logs/kernel-tests.txt
grep -h "ERROR SUMMARY" "$OUT"/logs/memcheck*.txt
echo "elapsed $(( $(date +%s) - start )) s, rc $rc"
rm -f "$OUT"/logs/*.gguf
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
