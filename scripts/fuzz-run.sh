#!/usr/bin/env bash
# Runs each libFuzzer target of a `make fuzz` build for a fixed time, starting from its
# seeds (and a git-ignored working corpus under fuzz/corpus-<target>/), and collects crash
# inputs under BUILD/fuzz-crashes/<target>/. Local use only: CI replays the seed corpora.
#   scripts/fuzz-run.sh BUILD SECONDS TARGET...
# Exit status 1 when any target found a crash (the inputs are listed).
set -u
build=$1 seconds=$2
shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
failed=0
for t in "$@"; do
    name=${t#ds4_}
    name=${name%_fuzz}
    exe=$build/bin/$t
    [ -x "$exe" ] || exe=$build/fuzz/$name/$t
    if [ ! -x "$exe" ]; then echo "fuzz-run: $t not built"; failed=1; continue; fi
    corpus=$src/fuzz/corpus-$name
    crashes=$build/fuzz-crashes/$t
    mkdir -p "$corpus" "$crashes"
    args=(-max_total_time="$seconds" -artifact_prefix="$crashes/" -print_final_stats=1)
    [ -f "$src/fuzz/$name/$name.dict" ] && args+=(-dict="$src/fuzz/$name/$name.dict")
    # The first directory receives new inputs; the seed directories are only read.
    dirs=("$corpus")
    for d in "$src/fuzz/$name/seeds" "$src/tests/data/fuzz/$name"; do [ -d "$d" ] && dirs+=("$d"); done
    echo "== $t ($seconds s)"
    "$exe" "${args[@]}" "${dirs[@]}" > "$build/fuzz-$name.log" 2>&1
    rc=$?
    grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE" "$build/fuzz-$name.log" | tail -2
    if [ $rc -ne 0 ] || ls "$crashes"/* >/dev/null 2>&1; then
        echo "fuzz-run: $t failed (exit $rc); inputs:"; ls "$crashes"; tail -30 "$build/fuzz-$name.log"
        failed=1
    fi
done
exit $failed
