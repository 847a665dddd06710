#!/usr/bin/env bash
# install_test.sh BUILD_DIR: installs the (fully built) BUILD_DIR into a temporary
# prefix with cmake --install and checks what lands there (cmake/install.cmake):
#   * the user-facing binaries, executable, in PREFIX/bin;
#   * every ds4-bench-* and ds4-server the build produced;
#   * no test or fuzz binary;
#   * the installed ds4-model-info runs from the prefix on the build's demo model.
set -euo pipefail

BUILD="${1:?usage: install_test.sh BUILD_DIR}"
PREFIX="$(mktemp -d "${TMPDIR:-/tmp}/ds4-install-test.XXXXXX")"
trap 'rm -rf -- "$PREFIX"' EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "---- $PREFIX ----" >&2
    (cd "$PREFIX" && find . -type f | sort) >&2
    exit 1
}

cmake --install "$BUILD" --prefix "$PREFIX" >"$PREFIX.log" 2>&1 || {
    cat "$PREFIX.log" >&2
    rm -f "$PREFIX.log"
    fail "cmake --install failed (is every target built?)"
}
rm -f "$PREFIX.log"

for tool in ds4 ds4-model-info ds4-make-model ds4-convert ds4-golden-check; do
    [[ -x $PREFIX/bin/$tool ]] || fail "$tool not installed in $PREFIX/bin"
done

# Optional components: whatever the build made must be installed too.
for built in "$BUILD"/bin/ds4-bench-* "$BUILD"/bin/ds4-server; do
    [[ -e $built ]] || continue
    [[ -x $PREFIX/bin/$(basename "$built") ]] || fail "$(basename "$built") built but not installed"
done

for installed in "$PREFIX"/bin/*; do
    name="$(basename "$installed")"
    case "$name" in
    *test* | *fuzz*) fail "$name is a test/fuzz binary and must not be installed" ;;
    ds4 | ds4-*) ;;
    *) fail "unexpected file $name in $PREFIX/bin" ;;
    esac
done
[[ -f $PREFIX/share/doc/ds4/README.md ]] || fail "README.md not installed"

# The installed binary is self-contained (static ds4 libraries): run it from the prefix.
demo="$BUILD/ds4-demo.gguf"
if [[ -f $demo ]]; then
    "$PREFIX/bin/ds4-model-info" "$demo" >/dev/null || fail "installed ds4-model-info failed on $demo"
fi

echo "PASS: installed $(find "$PREFIX/bin" -type f | wc -l) binaries into a temporary prefix"
