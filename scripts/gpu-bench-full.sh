#!/usr/bin/env bash
# Full-scale CUDA benchmark (issues 8 and 9): ds4-bench --cuda on the published shape with
# synthetic q2 weights generated in memory on the GPU host (no 81 GB file travels).
#
#   scripts/gpu-bench-full.sh build   here: build ds4-bench with -DDS4_CUDA=ON in
#                                     $BUILD_DIR (build-bench-cuda) and stage it, stripped and
#                                     statically linked, in .gpu-bin-full/ (carry that path)
#   scripts/gpu-bench-full.sh run     on the GPU host: card, then ds4-bench for each config
#                                     in $CONFIGS; CSVs and logs under $OUT (or ./gpu-logs)
#
# LAYERS (default 43: the whole model, ~81 GiB of q2 weights: an H200; an H100 takes 38)
# and CONFIGS ("NAME:ARGS;NAME:ARGS", ds4-bench arguments per run) choose the runs. Each
# run generates the synthetic model afresh (a memfd lives as long as its process).
# cuBLAS (GEMM ceiling) is loaded at run time: the first libcublas.so.13 found on the host
# is passed as DS4_CUBLAS.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
BUILD_DIR=${BUILD_DIR:-build-bench-cuda}
BIN=.gpu-bin-full
LOG=${OUT:-gpu-logs}
LAYERS=${LAYERS:-43}
CONFIGS=${CONFIGS:-"decode-b1:--ctx-start 2048 --ctx-max 2048 -n 32"}

build() {
    # No -Werror here: g++ 12 at -O3 raises false -Wrestrict inside libstdc++'s string
    # (the tests' -Werror builds are -O2 and -O0).
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDS4_WERROR=OFF -DDS4_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DDS4_BENCH=ON -DDS4_TESTS=OFF >/dev/null
    cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target ds4-bench
    mkdir -p "$BIN"
    strip -o "$BIN/ds4-bench" "$BUILD_DIR/bin/ds4-bench"
    if ldd "$BIN/ds4-bench" | grep -E 'stdc\+\+|cudart|cublas'; then
        echo "gpu-bench-full: ds4-bench links a library the GPU host may lack" >&2
        exit 1
    fi
    echo "gpu-bench-full: staged $BIN/ds4-bench ($(du -h "$BIN/ds4-bench" | cut -f1))"
}

run() {
    mkdir -p "$LOG"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv |
        tee "$LOG/card.txt"
    if [ -z "${DS4_CUBLAS:-}" ]; then
        DS4_CUBLAS=$(find / -xdev -name 'libcublas.so.13*' -type f 2>/dev/null | head -1 || true)
        export DS4_CUBLAS
    fi
    echo "cuBLAS: ${DS4_CUBLAS:-none found}"
    free -g | head -2
    local rc=0 cfg name args
    IFS=';' read -ra cfgs <<<"$CONFIGS"
    for cfg in "${cfgs[@]}"; do
        name=${cfg%%:*}
        args=${cfg#*:}
        echo "== $name: ds4-bench --cuda --synthetic q2 --layers $LAYERS $args"
        local t0=$SECONDS
        # shellcheck disable=SC2086
        if ! "$BIN/ds4-bench" --cuda --synthetic q2 --layers "$LAYERS" $args --csv "$LOG/$name.csv" \
            2>&1 | tee "$LOG/$name.txt"; then
            rc=1
        fi
        echo "($name: $((SECONDS - t0)) s)"
        cat "$LOG/$name.csv" 2>/dev/null || true
    done
    return $rc
}

case "$mode" in
    build) build ;;
    run) run ;;
    *) echo "usage: $0 build|run" >&2; exit 2 ;;
esac
