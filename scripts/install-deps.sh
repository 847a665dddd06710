#!/usr/bin/env bash
# Installs every Debian package the build and the tests need, and the npm packages the
# cross-check tests use. Idempotent: does nothing (and needs no network) when all are
# present. Works as root on a fresh Debian 12, or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    build-essential cmake ninja-build pkg-config git ca-certificates curl
    clang libclang-rt-dev          # libFuzzer target, sanitizer runtime
    libgtest-dev libgmock-dev libbenchmark-dev
    nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev libedit-dev
    nodejs npm                     # cross-checks against JS reference packages
    python3
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (e.g. a preinstalled Node): accept working binaries.
if command -v node >/dev/null && command -v npm >/dev/null; then
    tmp=()
    for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
    missing=("${tmp[@]+"${tmp[@]}"}")
fi

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages for the cross-check tests (pinned in tests/js/package.json).
if [[ -f tests/js/package.json ]]; then
    stamp=tests/js/node_modules/.ds4-stamp
    if [[ ! -f $stamp || tests/js/package.json -nt $stamp ]]; then
        echo "install-deps: npm install in tests/js"
        (cd tests/js && npm install --no-audit --no-fund --loglevel=error)
        touch "$stamp"
    fi
fi

# npm packages of the JS tests, each directory pinned in its package.json: the official
# OpenAI/Anthropic SDKs (tests/server/js) and the coding-agent CLIs run against the server
# (tests/server/clients: Codex, Claude Code, opencode, Pi; ~1.4 GB with their binaries).
for dir in tests/server/js tests/server/clients; do
    [[ -f $dir/package.json ]] || continue
    stamp=$dir/node_modules/.ds4-stamp
    if [[ ! -f $stamp || $dir/package.json -nt $stamp ]]; then
        echo "install-deps: npm install in $dir"
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
        touch "$stamp"
    fi
done
