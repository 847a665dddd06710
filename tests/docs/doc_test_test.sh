#!/usr/bin/env bash
# doc_test_test.sh BUILD_DIR: scripts/doc-test.sh on tests/docs/fixture.md: a passing
# block, a skipped one, a failing one, whose README line, text and output must be
# reported (exit status 1), and a failing one whose background job must not outlive it.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/../../scripts/doc-test.sh"
build="${1:?usage: doc_test_test.sh BUILD_DIR}"
fail() {
    echo "FAIL: $*" >&2
    echo "---- stdout ----" >&2
    cat "$out" >&2
    echo "---- stderr ----" >&2
    cat "$err" >&2
    exit 1
}
out="$(mktemp)" err="$(mktemp)"
trap 'rm -f -- "$out" "$err"' EXIT

bash "$script" "$build" "$here/fixture.md" >"$out" 2>"$err"
status=$?
[[ $status == 1 ]] || fail "exit status $status, expected 1"
grep -q "doc-test: ok    $here/fixture.md:6 " "$out" || fail "the first block did not pass"
grep -q "doc-test: FAIL  $here/fixture.md:26 (status 1)" "$err" || fail "the failing block was not reported with its line"
grep -q '^echo "never printed"$' "$err" || fail "the failing block's text was not printed"
grep -q '^doc-test-fixture-output$' "$err" || fail "the failing block's output was not printed"
grep -q "the skipped block ran" "$err" && fail "the skipped block ran"
grep -q "doc-test: 3 blocks run, 2 failed, 1 skipped" "$out" || fail "wrong summary"
sleep 1
pgrep -f "^sleep 4242$" >/dev/null && fail "a failed block's background job outlived it"

bash "$script" "$build" "$here/fixture.md" --list >"$out" 2>"$err" || fail "--list failed"
[[ $(grep -c '^run ' "$out") == 3 && $(grep -c '^skip ' "$out") == 1 ]] || fail "--list counts"
grep -q "^skip  $here/fixture.md:15  (would fail if it ran)$" "$out" || fail "--list skip reason"
echo "doc_test_test: ok"
