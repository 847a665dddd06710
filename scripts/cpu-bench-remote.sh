#!/usr/bin/env bash
# CPU kernel tests and benchmarks on a remote x86-64 host (the device machine's 16-core
# AVX-512 Xeon) from binaries built here: that host has no GoogleTest / Google Benchmark,
# so the test and bench binaries travel with libbenchmark beside them.
#
#   scripts/cpu-bench-remote.sh pack [OLD_BIN_DIR]   (here) copy build-cpuperf/bin's
#        binaries, OLD_BIN_DIR's ds4-bench-quant / ds4-bench-cpu (a build of the
#        baseline commit, for before/after in one run) and their shared libraries into
#        build-cpuperf-remote/ (ignored by git; carry it)
#   scripts/cpu-bench-remote.sh run [OUTDIR]         (there) run everything below,
#        logs into OUTDIR (default $OUT)
#
# What "run" does, in order of importance (each step under its own timeout, so a slow
# step cannot take the others' output with it):
#   1. the quant kernel tests with DS4_REQUIRE_ISA=avx512 (fails if AVX-512 is missing,
#      so the AVX-512 kernels are proven tested), and the cpu_fast tests;
#   2. ds4-bench-cpu (decode t/s against read bandwidth), baseline then new, at all
#      threads and at 2 threads (the dev box's count);
#   3. ds4-bench-quant matvec GB/s, baseline then new, AVX2 and AVX-512 tables.
set -u
DIR=build-cpuperf-remote

pack() {
    local old=${1:-/tmp/ds4-old/build/bin}
    rm -rf "$DIR" && mkdir -p "$DIR/new" "$DIR/old" "$DIR/lib"
    for b in ds4_quant_kernels_tests test_cpu_fast ds4-bench-quant ds4-bench-cpu; do
        cp build-cpuperf/bin/$b "$DIR/new/"
    done
    for b in ds4-bench-quant ds4-bench-cpu; do
        [ -x "$old/$b" ] && cp "$old/$b" "$DIR/old/"
    done
    # non-libc shared libraries of the binaries (libbenchmark, libstdc++, libgcc_s)
    ldd "$DIR"/new/* | awk '/=>/ {print $3}' | sort -u | grep -v -E 'libc\.so|libm\.so|ld-linux' |
        while read -r lib; do cp -L "$lib" "$DIR/lib/"; done
    du -sh "$DIR"
}

step() {  # step LOG TIMEOUT_S COMMAND...: run, append to $OUTDIR/LOG.log (at most 8 files come back)
    local log=$1 limit=$2
    shift 2
    echo "=== $* ($(date -u +%T)${DS4_POOL_SPIN_US:+, DS4_POOL_SPIN_US=$DS4_POOL_SPIN_US})" | tee -a "$OUTDIR/$log.log"
    timeout "$limit" "$@" >>"$OUTDIR/$log.log" 2>&1
    echo "--- rc $? ($(date -u +%T))" | tee -a "$OUTDIR/$log.log"
}

run() {
    OUTDIR=${1:-${OUT:-/tmp/cpu-bench-out}}
    mkdir -p "$OUTDIR"
    # libbenchmark from here; libstdc++ / libgcc_s only if the host's own are too old
    export LD_LIBRARY_PATH=$PWD/$DIR/lib
    mkdir -p "$DIR/lib2" && mv "$DIR"/lib/libstdc++* "$DIR"/lib/libgcc_s* "$DIR/lib2/" 2>/dev/null
    "$DIR/new/test_cpu_fast" --gtest_list_tests >/dev/null 2>&1 || export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$PWD/$DIR/lib2
    local threads
    threads=$(nproc)
    { lscpu | grep -E 'Model name|^CPU\(s\)|Thread|L2|L3|NUMA node\(s\)'
      grep -o -w -E 'avx512(f|bw|vl|dq|_vnni|vbmi)|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
      free -g | head -2; uptime; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; } >"$OUTDIR/host.log" 2>&1
    cat "$OUTDIR/host.log"

    mkdir -p build-cpuperf  # test_cpu_fast writes its model files beside the build it came from
    DS4_REQUIRE_ISA=avx512 step tests 120 "$DIR/new/ds4_quant_kernels_tests"
    step tests 120 "$DIR/new/test_cpu_fast"
    grep -E 'PASSED|FAILED|isas \]' "$OUTDIR/tests.log" | head -20
    # ad-hoc kernel A/B harnesses, when packed
    [ -x "$DIR/ab" ] && step micro 30 "$DIR/ab" 2000
    [ -x "$DIR/var" ] && step micro 30 "$DIR/var"
    [ -f "$OUTDIR/micro.log" ] && cat "$OUTDIR/micro.log"

    local bc="--prefill 8 --decode 16 --reps 3"
    step bench-cpu 150 "$DIR/new/ds4-bench-cpu" $bc --threads "$threads"  # generates the model
    for v in old new; do
        for t in "$threads" 2; do
            [ "$v/$t" = "new/$threads" ] && continue
            [ -x "$DIR/$v/ds4-bench-cpu" ] && step bench-cpu 45 "$DIR/$v/ds4-bench-cpu" $bc --threads "$t"
        done
    done
    DS4_POOL_SPIN_US=0 step bench-cpu 45 "$DIR/new/ds4-bench-cpu" $bc --threads "$threads"  # pool without spinning
    grep -E '^(===|read bandwidth|decode|by CPU|numerics)' "$OUTDIR/bench-cpu.log"

    local q="--benchmark_min_time=0.05 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true"
    local shapes='(32x4096/l2|2048x4096/cold|32768x4096/dram)/threads:(1|'"$threads"')(/real_time)?$'
    step bench-quant-new 90 "$DIR/new/ds4-bench-quant" $q \
        "--benchmark_filter=^matvec4?/(Q8_0|Q2_K|IQ2_XXS)/(avx2|avx512)/$shapes"
    [ -x "$DIR/old/ds4-bench-quant" ] && step bench-quant-old 70 "$DIR/old/ds4-bench-quant" $q \
        "--benchmark_filter=^matvec/(Q8_0|Q2_K|IQ2_XXS)/(avx2|avx512)/$shapes"
    for f in "$OUTDIR"/bench-quant-*.log; do
        echo "## $(basename "$f")"; grep -E 'reference copy|_median' "$f" | sed -E 's/ +/ /g'
    done
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 pack [OLD_BIN_DIR] | run [OUTDIR]" >&2; exit 2 ;;
esac
