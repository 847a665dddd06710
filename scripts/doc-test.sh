#!/usr/bin/env bash
# doc-test.sh BUILD_DIR [MARKDOWN] [--list]
#
# Runs every fenced ```sh block of MARKDOWN (default: README.md next to this script's
# folder) against an already built tree, so the commands the README shows keep working.
#
#   * A block preceded (on the line before its fence) by an HTML comment
#       <!-- doc-test: skip (why) -->
#     is not run: commands that need the real weights, a GPU, the network, or that would
#     rebuild the tree. Blocks of other languages (```text, ```toml, ```json) never run.
#   * Each block runs on its own with `bash -e -o pipefail`, in a fresh temporary
#     directory where `build` points at BUILD_DIR and `scripts` at the source scripts/,
#     so README paths such as build/bin/ds4 and build/ds4-demo.gguf resolve; HOME is that
#     directory too, and BUILD_DIR/bin is first on PATH.
#   * Port 8000 (ds4-server's default) in a block is replaced by a free port, so the
#     test can run next to anything else listening there.
#   * Background jobs a block starts are killed when it ends.
#   * Nothing is built and nothing goes to the network: the Hugging Face endpoint is
#     pointed at a closed local port.
#   * A failing block (non-zero status, or still running after DS4_DOC_TEST_TIMEOUT
#     seconds, default 300) is printed with its README line, its text and its output;
#     the script exits 1 after running the rest. --list prints the blocks and whether
#     each runs, and runs nothing.
set -uo pipefail

usage() {
    echo "usage: doc-test.sh BUILD_DIR [MARKDOWN] [--list]" >&2
    exit 2
}

list=0
args=()
for a in "$@"; do
    case "$a" in
    --list) list=1 ;;
    -h | --help) usage ;;
    *) args+=("$a") ;;
    esac
done
[[ ${#args[@]} -ge 1 && ${#args[@]} -le 2 ]] || usage
build="$(cd "${args[0]}" 2>/dev/null && pwd)" || { echo "doc-test: no build directory ${args[0]}" >&2; exit 2; }
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
doc="${args[1]:-$src/README.md}"
[[ -f $doc ]] || { echo "doc-test: no such file $doc" >&2; exit 2; }
timeout_s="${DS4_DOC_TEST_TIMEOUT:-300}"

work="$(mktemp -d "${TMPDIR:-/tmp}/ds4-doc-test.XXXXXX")"
trap 'rm -rf -- "$work"' EXIT

# Splits the document into $work/blocks/N.sh (the block text), N.line (the line of its
# opening fence) and N.skip (the reason, for skipped blocks).
mkdir "$work/blocks"
awk -v dir="$work/blocks" '
    function flush_skip() { skip = "" }
    !inblock && /^```sh[ \t]*$/ {
        n++; inblock = 1
        file = dir "/" n ".sh"
        printf "" > file
        print NR > (dir "/" n ".line")
        if (skip != "") print skip > (dir "/" n ".skip")
        flush_skip()
        next
    }
    inblock && /^```[ \t]*$/ { inblock = 0; close(file); next }
    inblock { print >> file; next }
    /^<!-- doc-test: skip/ {
        skip = $0
        sub(/^<!-- doc-test: skip[ \t]*/, "", skip)
        sub(/[ \t]*-->[ \t]*$/, "", skip)
        if (skip == "") skip = "(no reason given)"
        next
    }
    /^[ \t]*$/ { next }   # a blank line between the comment and the fence is fine
    { flush_skip() }
    END { if (inblock) { print "doc-test: unterminated ```sh block" > "/dev/stderr"; exit 1 } }
' "$doc" || exit 2

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    echo 18000
}

# Runs block $1 in a fresh directory; prints nothing on success.
run_block() {
    local n="$1" dir="$work/run.$1" port
    mkdir "$dir"
    ln -s "$build" "$dir/build"
    ln -s "$src/scripts" "$dir/scripts"
    port="$(free_port)"
    {
        # Background jobs a block started (a server) never outlive it, even when it fails
        # half-way or is timed out.
        echo "trap 'kill \$(jobs -p) 2>/dev/null || true' EXIT"
        echo "trap 'exit 143' TERM"
        sed -e "s/\([:= ]\)8000\b/\1$port/g" "$work/blocks/$n.sh"
    } >"$dir/block.sh"
    (
        cd "$dir" &&
            HOME="$dir" PATH="$build/bin:$PATH" DS4_HF_ENDPOINT="http://127.0.0.1:9" \
                HF_ENDPOINT="http://127.0.0.1:9" \
                timeout -k 10 "$timeout_s" bash -e -o pipefail block.sh
    ) >"$dir/output" 2>&1
}

ran=0 skipped=0 failed=0
total="$(find "$work/blocks" -name '*.sh' | wc -l)"
for n in $(seq 1 "$total"); do
    line="$(cat "$work/blocks/$n.line")"
    if [[ -f $work/blocks/$n.skip ]]; then
        skipped=$((skipped + 1))
        [[ $list == 1 ]] && echo "skip  $doc:$line  $(cat "$work/blocks/$n.skip")"
        continue
    fi
    if [[ $list == 1 ]]; then
        echo "run   $doc:$line  $(head -n 1 "$work/blocks/$n.sh")"
        continue
    fi
    ran=$((ran + 1))
    if run_block "$n"; then
        echo "doc-test: ok    $doc:$line  $(head -n 1 "$work/blocks/$n.sh")"
    else
        status=$?
        failed=$((failed + 1))
        {
            echo "doc-test: FAIL  $doc:$line (status $status$([[ $status == 124 ]] && echo ", timed out after ${timeout_s} s"))"
            echo "---- block ----"
            cat "$work/blocks/$n.sh"
            echo "---- output ----"
            cat "$work/run.$n/output"
            echo "----------------"
        } >&2
    fi
done
[[ $list == 1 ]] && exit 0
echo "doc-test: $ran blocks run, $failed failed, $skipped skipped ($doc)"
[[ $failed == 0 ]]
