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

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to $OUTDIR/NAME.log, echo the tail
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%T))"
    timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
    echo "--- rc $? ($(date -u +%T))"
}

run() {
    OUTDIR=${1:-${OUT:-/tmp/cpu-bench-out}}
    mkdir -p "$OUTDIR"
    export LD_LIBRARY_PATH=$PWD/$DIR/lib
    local threads
    threads=$(nproc)
    { lscpu | grep -E 'Model name|^CPU\(s\)|Thread|L2|L3|Flags' | sed 's/Flags:.*\(avx512[a-z_]*\).*/AVX-512: yes/'
      grep -o -w -E 'avx512(f|bw|vl|dq|_vnni|vbmi)' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
      free -g | head -2; uptime; } >"$OUTDIR/host.log" 2>&1
    cat "$OUTDIR/host.log"

    DS4_REQUIRE_ISA=avx512 step kernels-tests 120 "$DIR/new/ds4_quant_kernels_tests"
    grep -E 'PASSED|FAILED|isas \]' "$OUTDIR/kernels-tests.log" | head -12
    step cpu-fast-tests 120 "$DIR/new/test_cpu_fast"
    grep -E 'PASSED|FAILED' "$OUTDIR/cpu-fast-tests.log" | head -5

    local bc="--prefill 8 --decode 16 --reps 3"
    step bench-cpu-new-all 180 "$DIR/new/ds4-bench-cpu" $bc --threads "$threads"  # generates the model
    for v in old new; do
        for t in "$threads" 2; do
            [ "$v/$t" = "new/$threads" ] && continue
            [ -x "$DIR/$v/ds4-bench-cpu" ] && step "bench-cpu-$v-$t" 60 "$DIR/$v/ds4-bench-cpu" $bc --threads "$t"
        done
    done
    for f in "$OUTDIR"/bench-cpu-*.log; do
        echo "## $(basename "$f")"; grep -E '^(read bandwidth|decode|by CPU|numerics)' "$f"
    done

    local q="--benchmark_min_time=0.05 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true"
    local shapes='(32x4096/l2|2048x4096/cold|32768x4096/dram)/threads:(1|'"$threads"')$'
    step bench-quant-new 150 "$DIR/new/ds4-bench-quant" $q \
        "--benchmark_filter=^matvec4?/(Q8_0|Q2_K|IQ2_XXS)/(avx2|avx512)/$shapes" --benchmark_format=console
    [ -x "$DIR/old/ds4-bench-quant" ] && step bench-quant-old 120 "$DIR/old/ds4-bench-quant" $q \
        "--benchmark_filter=^matvec/(Q8_0|Q2_K|IQ2_XXS)/(avx2|avx512)/$shapes" --benchmark_format=console
    for f in "$OUTDIR"/bench-quant-*.log; do
        echo "## $(basename "$f")"; grep -E 'reference copy|_median' "$f" | sed -E 's/ +/ /g'
    done
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 pack [OLD_BIN_DIR] | run [OUTDIR]" >&2; exit 2 ;;
esac
