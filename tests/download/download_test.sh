#!/usr/bin/env bash
# End-to-end tests of scripts/download_model.sh against tests/download/fake_hub.mjs, a
# fake Hugging Face hub on 127.0.0.1. No real network is used.
#
#   download_test.sh CASE     run one case (ctest runs each as its own test)
#   download_test.sh all      run every case
#
# Each case gets a fresh sandbox: a copy of the script in SANDBOX/scripts/ (so that
# SANDBOX is its "repository root", where gguf/ and ds4flash.gguf go), HOME in the
# sandbox (no real token file), and its own server with the faults the case needs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SOURCE_ROOT="$(cd "$HERE/../.." && pwd)"

readonly Q2I="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf"
readonly Q4I="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf"
readonly Q2="DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf"
readonly Q4="DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf"
readonly MTP="DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf"
# The fake hub's file sizes: 100000 + index * 50001 bytes.
readonly Q2I_SIZE=100000

SANDBOX=""
SERVER_PID=""
PORT=""
OUT=""   # combined stdout+stderr of the last run_script
RC=0     # its exit status

fail() {
    echo "FAIL: $*" >&2
    if [[ -n $OUT ]]; then
        echo "---- script output ----" >&2
        cat "$OUT" >&2
    fi
    if [[ -n $SANDBOX && -f $SANDBOX/requests.log ]]; then
        echo "---- server log ----" >&2
        cat "$SANDBOX/requests.log" >&2
    fi
    exit 1
}

stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

cleanup() {
    stop_server
    [[ -z $SANDBOX ]] || rm -rf -- "$SANDBOX"
}
trap cleanup EXIT

make_sandbox() {
    SANDBOX="$(mktemp -d "${TMPDIR:-/tmp}/ds4-download-test.XXXXXX")"
    mkdir -p "$SANDBOX/scripts" "$SANDBOX/home"
    cp "$SOURCE_ROOT/scripts/download_model.sh" "$SANDBOX/scripts/"
    OUT="$SANDBOX/output.txt"
}

# start_server [fake_hub options...]: (re)starts the fake hub with a fresh request log.
start_server() {
    stop_server
    rm -f "$SANDBOX/port" "$SANDBOX/requests.log"
    : >"$SANDBOX/requests.log"
    node "$HERE/fake_hub.mjs" --port-file "$SANDBOX/port" --log "$SANDBOX/requests.log" "$@" &
    SERVER_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -s $SANDBOX/port ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || fail "fake hub exited during startup"
        sleep 0.05
    done
    [[ -s $SANDBOX/port ]] || fail "fake hub did not start"
    PORT="$(cat "$SANDBOX/port")"
}

# run_script ARGS...: runs the sandboxed script with a clean environment; sets RC, OUT.
run_script() {
    RC=0
    (
        cd "$SANDBOX"
        env -u HF_TOKEN -u HF_TOKEN_PATH -u HF_HOME -u HF_ENDPOINT -u DS4_GGUF_DIR \
            HOME="$SANDBOX/home" DS4_HF_ENDPOINT="http://127.0.0.1:$PORT" \
            DS4_RETRY_DELAY=0 "${EXTRA_ENV[@]}" \
            "$SANDBOX/scripts/download_model.sh" "$@"
    ) >"$OUT" 2>&1 || RC=$?
}
EXTRA_ENV=()

expect_rc() { [[ $RC == "$1" ]] || fail "expected exit status $1, got $RC"; }
expect_fail() { [[ $RC != 0 ]] || fail "expected a non-zero exit status"; }
expect_output() { grep -qF -- "$1" "$OUT" || fail "output lacks '$1'"; }
expect_no_output() { ! grep -qF -- "$1" "$OUT" || fail "output unexpectedly has '$1'"; }
expect_file() { [[ -f $1 ]] || fail "missing file $1"; }
expect_no_file() { [[ ! -e $1 && ! -L $1 ]] || fail "unexpected file $1"; }

# Requests whose path contains $1 (grep -c on the JSON log lines).
count_requests() { grep -cF -- "$1" "$SANDBOX/requests.log" || true; }

# The fake hub's bytes for FILE, fetched with an independent client call.
hub_bytes() { curl -fsS "http://127.0.0.1:$PORT/cdn/$1" -o "$2"; }

expect_same_as_hub() {
    local file=$1 ref="$SANDBOX/reference.bin"
    hub_bytes "$(basename "$file")" "$ref"
    cmp -s "$ref" "$file" || fail "$file differs from the hub's bytes"
}

expect_link() {
    local link="$SANDBOX/ds4flash.gguf"
    [[ -L $link ]] || fail "$link is not a symlink"
    [[ "$(readlink "$link")" == "$1" ]] || fail "$link -> $(readlink "$link"), expected $1"
}

# ---------------------------------------------------------------- cases

case_fresh_download() {
    start_server
    run_script q2-imatrix
    expect_rc 0
    expect_file "$SANDBOX/gguf/$Q2I"
    expect_no_file "$SANDBOX/gguf/$Q2I.part"
    expect_same_as_hub "$SANDBOX/gguf/$Q2I"
    [[ "$(stat -c %s "$SANDBOX/gguf/$Q2I")" == "$Q2I_SIZE" ]] || fail "wrong size"
    expect_link "$SANDBOX/gguf/$Q2I"
    expect_output "SHA-256 OK"
    expect_output "100000 bytes"
    # The hub's resolve URL redirects to the CDN; both were followed, no range asked.
    [[ $(count_requests "/resolve/main/$Q2I") == 1 ]] || fail "expected one resolve request"
    [[ $(count_requests "\"range\":\"bytes=") == 0 ]] || fail "unexpected range request"
    # No token anywhere: nothing may send an Authorization header.
    [[ $(count_requests '"auth":"') == 0 ]] || fail "Authorization sent without a token"
}

case_already_downloaded() {
    start_server
    run_script q2-imatrix
    expect_rc 0
    : >"$SANDBOX/requests.log"
    run_script q2-imatrix
    expect_rc 0
    expect_output "already downloaded"
    [[ $(count_requests "/cdn/") == 0 ]] || fail "an existing file was downloaded again"
    expect_link "$SANDBOX/gguf/$Q2I"
}

# A file whose size differs from the hub's is not silently accepted as downloaded.
case_existing_wrong_size() {
    start_server
    mkdir -p "$SANDBOX/gguf"
    echo "stale" >"$SANDBOX/gguf/$Q2I"
    run_script q2-imatrix
    expect_fail
    expect_output "remove it to download again"
    expect_no_file "$SANDBOX/ds4flash.gguf"
}

# The server drops the connection half-way; the script resumes in the same run.
case_resume_same_run() {
    start_server --cut-first
    run_script q2-imatrix
    expect_rc 0
    expect_output "transfer interrupted (curl exit 18); retrying from 50000 bytes"
    [[ $(count_requests "/cdn/$Q2I") == 2 ]] || fail "expected two CDN requests"
    [[ $(count_requests '"range":"bytes=50000-"') == 2 ]] ||
        fail "the retry did not ask for bytes=50000- (resolve and CDN)"
    expect_same_as_hub "$SANDBOX/gguf/$Q2I"
    expect_link "$SANDBOX/gguf/$Q2I"
}

# With no retries the cut ends the run; the .part stays and the next run resumes it.
case_resume_next_run() {
    start_server --cut-first
    EXTRA_ENV=(DS4_DOWNLOAD_RETRIES=0)
    run_script q2-imatrix
    EXTRA_ENV=()
    expect_fail
    expect_output "run the script again to resume"
    expect_file "$SANDBOX/gguf/$Q2I.part"
    [[ "$(stat -c %s "$SANDBOX/gguf/$Q2I.part")" == 50000 ]] || fail ".part should hold 50000 bytes"
    expect_no_file "$SANDBOX/gguf/$Q2I"
    expect_no_file "$SANDBOX/ds4flash.gguf"

    run_script q2-imatrix
    expect_rc 0
    expect_output "resuming $Q2I.part at 50000 bytes"
    [[ $(count_requests '"range":"bytes=50000-"') == 2 ]] || fail "second run did not resume"
    expect_same_as_hub "$SANDBOX/gguf/$Q2I"
    expect_no_file "$SANDBOX/gguf/$Q2I.part"
}

# A .part left by anything (here: the first 12345 bytes) is continued with a Range
# request, and a .part that is already complete needs no request at all.
case_range_requests() {
    start_server
    mkdir -p "$SANDBOX/gguf"
    curl -fsS -r 0-12344 "http://127.0.0.1:$PORT/cdn/$MTP" -o "$SANDBOX/gguf/$MTP.part"
    [[ "$(stat -c %s "$SANDBOX/gguf/$MTP.part")" == 12345 ]] || fail "fake hub range read"
    : >"$SANDBOX/requests.log"
    run_script mtp
    expect_rc 0
    [[ $(count_requests '"range":"bytes=12345-"') == 2 ]] || fail "no bytes=12345- request"
    expect_same_as_hub "$SANDBOX/gguf/$MTP"

    hub_bytes "$Q2" "$SANDBOX/gguf/$Q2.part"
    : >"$SANDBOX/requests.log"
    run_script q2
    expect_rc 0
    expect_output "$Q2.part is complete"
    [[ $(count_requests "/cdn/") == 0 ]] || fail "a complete .part was fetched again"
    expect_link "$SANDBOX/gguf/$Q2"
}

# A server that answers a Range request with the whole file (200) cannot resume: the
# script says so and keeps the .part rather than appending a second copy to it.
case_server_without_ranges() {
    start_server --no-ranges
    mkdir -p "$SANDBOX/gguf"
    hub_bytes "$MTP" "$SANDBOX/whole.bin"
    head -c 5000 "$SANDBOX/whole.bin" >"$SANDBOX/gguf/$MTP.part"
    run_script mtp
    expect_fail
    expect_output "ignored the Range request"
    [[ "$(stat -c %s "$SANDBOX/gguf/$MTP.part")" == 5000 ]] || fail ".part was modified"
    expect_no_file "$SANDBOX/gguf/$MTP"
}

case_checksum_mismatch() {
    start_server --bad-hash "$Q2I"
    run_script q2-imatrix
    expect_fail
    expect_output "SHA-256 mismatch for $Q2I"
    expect_output "kept at $SANDBOX/gguf/$Q2I.part"
    expect_file "$SANDBOX/gguf/$Q2I.part"
    [[ "$(stat -c %s "$SANDBOX/gguf/$Q2I.part")" == "$Q2I_SIZE" ]] || fail ".part not kept whole"
    expect_no_file "$SANDBOX/gguf/$Q2I"
    expect_no_file "$SANDBOX/ds4flash.gguf"
    # Running again does not download anything and still refuses.
    : >"$SANDBOX/requests.log"
    run_script q2-imatrix
    expect_fail
    expect_output "SHA-256 mismatch"
    [[ $(count_requests "/cdn/") == 0 ]] || fail "refetched a complete .part"
}

# A hub listing without an LFS hash cannot be verified; --no-verify is the way out.
case_no_lfs_hash() {
    start_server --no-lfs "$Q4"
    run_script q4
    expect_fail
    expect_output "without an LFS SHA-256"
    expect_no_file "$SANDBOX/gguf/$Q4.part"
    run_script q4 --no-verify
    expect_rc 0
    expect_output "was not checked"
    expect_same_as_hub "$SANDBOX/gguf/$Q4"
    # Unverified, a complete .part is recognised by the server's 416 to its range.
    hub_bytes "$Q2" "$SANDBOX/gguf/$Q2.part"
    run_script q2 --no-verify
    expect_rc 0
    expect_output "it is complete"
    expect_same_as_hub "$SANDBOX/gguf/$Q2"
}

case_missing_token() {
    start_server --require-token hf_secret
    run_script q2-imatrix
    expect_fail
    expect_output "HTTP 401"
    expect_output "pass --token TOKEN, set HF_TOKEN"
    expect_no_file "$SANDBOX/gguf/$Q2I.part"
    # The download request itself answers 401 the same way (verification off).
    run_script q2-imatrix --no-verify
    expect_fail
    expect_output "requires authentication (HTTP 401"
    expect_no_file "$SANDBOX/gguf/$Q2I.part"
    expect_no_file "$SANDBOX/gguf/$Q2I"
}

case_invalid_token() {
    start_server --require-token hf_secret
    run_script q2-imatrix --token hf_wrong
    expect_fail
    expect_output "rejected the token from --token (HTTP 401"
    expect_no_output "hf_wrong"
    EXTRA_ENV=(HF_TOKEN=hf_wrong)
    run_script q2-imatrix --no-verify
    EXTRA_ENV=()
    expect_fail
    expect_output "rejected the token from HF_TOKEN (HTTP 401"
    expect_no_file "$SANDBOX/gguf/$Q2I.part"
}

# --token > HF_TOKEN > token file; the token travels as a Bearer header.
case_token_sources() {
    start_server --require-token hf_secret
    EXTRA_ENV=(HF_TOKEN=hf_secret)
    run_script mtp
    expect_rc 0
    [[ $(count_requests '"auth":"Bearer hf_secret"') -ge 2 ]] || fail "HF_TOKEN not sent"

    rm -rf "$SANDBOX/gguf"
    EXTRA_ENV=(HF_TOKEN=hf_wrong)
    run_script mtp --token hf_secret
    expect_rc 0

    rm -rf "$SANDBOX/gguf"
    EXTRA_ENV=()
    mkdir -p "$SANDBOX/home/.cache/huggingface"
    printf 'hf_secret\n' >"$SANDBOX/home/.cache/huggingface/token"
    run_script mtp --dry-run
    expect_output "token:       $SANDBOX/home/.cache/huggingface/token (value not shown)"
    run_script mtp
    expect_rc 0
    expect_same_as_hub "$SANDBOX/gguf/$MTP"
    # The token is never an argument of a process (it goes through a header file).
    expect_no_output "hf_secret"
}

case_dry_run() {
    start_server
    run_script q4-imatrix --dry-run
    expect_rc 0
    expect_output "dry run: nothing is downloaded or changed"
    expect_output "url:         http://127.0.0.1:$PORT/antirez/deepseek-v4-gguf/resolve/main/$Q4I"
    expect_output "destination: $SANDBOX/gguf/$Q4I"
    expect_output "hub size:    150001 bytes"
    expect_output "hub sha256:  "
    expect_output "would link:  $SANDBOX/ds4flash.gguf -> $SANDBOX/gguf/$Q4I"
    expect_output "token:       none"
    expect_no_file "$SANDBOX/gguf"
    expect_no_file "$SANDBOX/ds4flash.gguf"
    [[ $(count_requests "/resolve/") == 0 ]] || fail "dry run downloaded"
    # With an unreachable hub the plan is still printed.
    stop_server
    run_script mtp --dry-run
    expect_rc 0
    expect_output "hub entry:   unavailable"
    expect_no_output "would link"
}

# Each main-model target re-points ds4flash.gguf; mtp leaves it and prints the flags.
case_link_update() {
    start_server
    run_script q2-imatrix
    expect_rc 0
    expect_link "$SANDBOX/gguf/$Q2I"
    run_script q4
    expect_rc 0
    expect_link "$SANDBOX/gguf/$Q4"
    run_script mtp
    expect_rc 0
    expect_link "$SANDBOX/gguf/$Q4"
    expect_output "--mtp $SANDBOX/gguf/$MTP --mtp-draft 2"
    # Going back to an already downloaded file re-points the link without a download.
    : >"$SANDBOX/requests.log"
    run_script q2-imatrix
    expect_rc 0
    expect_link "$SANDBOX/gguf/$Q2I"
    [[ $(count_requests "/cdn/") == 0 ]] || fail "re-linking downloaded again"
    # A regular file named ds4flash.gguf is somebody's model: never replaced.
    rm "$SANDBOX/ds4flash.gguf"
    echo "mine" >"$SANDBOX/ds4flash.gguf"
    run_script q4
    expect_fail
    expect_output "is a regular file, not a link"
    [[ "$(cat "$SANDBOX/ds4flash.gguf")" == mine ]] || fail "regular file was touched"
}

case_destination() {
    start_server
    EXTRA_ENV=(DS4_GGUF_DIR=models)
    run_script mtp
    EXTRA_ENV=()
    expect_rc 0
    expect_same_as_hub "$SANDBOX/models/$MTP"
    mkdir -p "$SANDBOX/elsewhere"
    run_script q2 --dir "$SANDBOX/elsewhere/weights"
    expect_rc 0
    expect_same_as_hub "$SANDBOX/elsewhere/weights/$Q2"
    expect_link "$SANDBOX/elsewhere/weights/$Q2"
}

case_usage() {
    PORT=1
    run_script
    expect_rc 1
    expect_output "usage:"
    run_script --help
    expect_rc 0
    expect_output "q2-imatrix"
    run_script help
    expect_rc 0
    run_script q8
    expect_rc 1
    expect_output "unknown target 'q8'"
    run_script q2 --bogus
    expect_rc 1
    expect_output "unknown option '--bogus'"
    run_script q2 --token
    expect_rc 1
    run_script q2 q4
    expect_rc 1
    expect_no_file "$SANDBOX/gguf"
}

case_aria2_guard() {
    start_server
    mkdir -p "$SANDBOX/gguf"
    : >"$SANDBOX/gguf/$Q2I.aria2"
    run_script q2-imatrix
    expect_fail
    expect_output ".aria2 exists"
    [[ $(count_requests "/cdn/") == 0 ]] || fail "downloaded despite the .aria2 file"
}

ALL_CASES=(fresh_download already_downloaded existing_wrong_size resume_same_run
    resume_next_run range_requests server_without_ranges checksum_mismatch no_lfs_hash missing_token
    invalid_token token_sources dry_run link_update destination usage aria2_guard)

run_case() {
    local name=$1
    declare -F "case_$name" >/dev/null || fail "no such case '$name'"
    make_sandbox
    "case_$name"
    cleanup
    SANDBOX=""
    OUT=""
    echo "PASS: $name"
}

main() {
    (($# == 1)) || { echo "usage: $0 CASE|all (cases: ${ALL_CASES[*]})" >&2; exit 2; }
    command -v node >/dev/null || fail "node is required"
    if [[ $1 == all ]]; then
        local c
        for c in "${ALL_CASES[@]}"; do run_case "$c"; done
    else
        run_case "$1"
    fi
}

main "$@"
