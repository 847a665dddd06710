#!/usr/bin/env bash
# Downloads a published ds4 GGUF from the Hugging Face hub into ./gguf/ and points
# ./ds4flash.gguf (the default -m of every ds4 binary) at it.
#
# Same targets, file names, URLs, token lookup, .part resume and link as ds4's
# download_model.sh (formats.md §7), plus:
#   * every completed file is checked against the SHA-256 the hub publishes for it
#     (the "lfs" object of the repository tree API); on a mismatch the .part is kept
#     and the script exits non-zero, so nothing unverified ever becomes the model;
#   * a cut connection is resumed in the same run (DS4_DOWNLOAD_RETRIES attempts);
#   * sizes are printed, HTTP errors are explained, --dry-run shows the plan;
#   * the token is passed to curl through a private header file, not its argv.
#
# Environment:
#   DS4_HF_ENDPOINT (or HF_ENDPOINT)  hub base URL, default https://huggingface.co
#   DS4_GGUF_DIR                       destination (relative: against the repo root)
#   HF_TOKEN, HF_TOKEN_PATH, HF_HOME   token lookup, as huggingface_hub does
#   DS4_DOWNLOAD_RETRIES               resume attempts after a cut (default 5)
#   DS4_RETRY_DELAY                    seconds between attempts (default 5)
set -euo pipefail

readonly REPO="antirez/deepseek-v4-gguf"
readonly REVISION="main"
ENDPOINT="${DS4_HF_ENDPOINT:-${HF_ENDPOINT:-https://huggingface.co}}"
ENDPOINT="${ENDPOINT%/}"
readonly ENDPOINT
# The script lives in scripts/; ds4's lives in the repository root, which is where
# ./gguf and ./ds4flash.gguf belong.
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$SCRIPT_DIR")"
readonly SCRIPT_DIR ROOT
RETRIES="${DS4_DOWNLOAD_RETRIES:-5}"
RETRY_DELAY="${DS4_RETRY_DELAY:-5}"

usage() {
    cat <<EOF
usage: scripts/download_model.sh TARGET [--token TOKEN] [--dir DIR] [--dry-run] [--no-verify]

TARGET:
  q2-imatrix  2-bit routed experts with imatrix (81 GB; preferred for 96/128 GB RAM)
  q4-imatrix  4-bit routed experts with imatrix (153 GB; preferred for >= 256 GB RAM)
  q2          2-bit, legacy quantization (81 GB)
  q4          4-bit, legacy quantization (153 GB)
  mtp         optional MTP draft model for speculative decoding (3.5 GB)

Options:
  --token T   Hugging Face token (default: \$HF_TOKEN, then the huggingface_hub token file)
  --dir DIR   destination directory (default: \$DS4_GGUF_DIR, then $ROOT/gguf)
  --dry-run   print what would be done; downloads nothing and changes nothing
  --no-verify skip the SHA-256 check (for mirrors without the hub's tree API)

Files come from $ENDPOINT/$REPO (set DS4_HF_ENDPOINT for a mirror).
Interrupted downloads resume from FILE.part. Every target except mtp updates
$ROOT/ds4flash.gguf to point at the downloaded file.
EOF
}

die() {
    echo "download_model.sh: error: $*" >&2
    exit 1
}

note() { echo "download_model.sh: $*"; }

file_for_target() {
    case "$1" in
    q2-imatrix) echo "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf" ;;
    q4-imatrix) echo "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf" ;;
    q2) echo "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf" ;;
    q4) echo "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf" ;;
    mtp) echo "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf" ;;
    *) return 1 ;;
    esac
}

# "81.0 GB" style sizes (decimal units, as the hub shows them), exact bytes when small.
human_size() {
    local b=$1
    if ((b >= 1000000000)); then
        printf '%d.%d GB' $((b / 1000000000)) $((b % 1000000000 / 100000000))
    elif ((b >= 1000000)); then
        printf '%d.%d MB' $((b / 1000000)) $((b % 1000000 / 100000))
    else
        printf '%d bytes' "$b"
    fi
}

file_size() { stat -c %s -- "$1"; }

# ---------------------------------------------------------------- arguments
TARGET=""
TOKEN=""
TOKEN_SOURCE=""
DEST_DIR=""
DRY_RUN=0
VERIFY=1

parse_args() {
    while (($#)); do
        case "$1" in
        -h | --help | help)
            usage
            exit 0
            ;;
        --token)
            (($# >= 2)) || die "--token needs a value"
            TOKEN="$2"
            TOKEN_SOURCE="--token"
            shift 2
            ;;
        --token=*)
            TOKEN="${1#--token=}"
            TOKEN_SOURCE="--token"
            shift
            ;;
        --dir)
            (($# >= 2)) || die "--dir needs a value"
            DEST_DIR="$2"
            shift 2
            ;;
        --dir=*)
            DEST_DIR="${1#--dir=}"
            shift
            ;;
        --dry-run)
            DRY_RUN=1
            shift
            ;;
        --no-verify)
            VERIFY=0
            shift
            ;;
        -*)
            usage >&2
            die "unknown option '$1'"
            ;;
        *)
            [[ -z $TARGET ]] || die "only one target may be given (got '$TARGET' and '$1')"
            TARGET="$1"
            shift
            ;;
        esac
    done
    if [[ -z $TARGET ]]; then
        usage >&2
        exit 1
    fi
    if ! file_for_target "$TARGET" >/dev/null; then
        usage >&2
        die "unknown target '$TARGET'"
    fi
}

# --token > $HF_TOKEN > the token file huggingface_hub writes on login (ds4 reads
# ~/.cache/huggingface/token, which is this path's default).
resolve_token() {
    if [[ -n $TOKEN ]]; then
        return
    fi
    if [[ -n ${HF_TOKEN:-} ]]; then
        TOKEN="$HF_TOKEN"
        TOKEN_SOURCE="HF_TOKEN"
        return
    fi
    local path="${HF_TOKEN_PATH:-${HF_HOME:-${HOME:-}/.cache/huggingface}/token}"
    if [[ -s $path ]]; then
        TOKEN="$(tr -d '[:space:]' <"$path")"
        [[ -n $TOKEN ]] && TOKEN_SOURCE="$path"
    fi
}

# Relative DS4_GGUF_DIR is resolved against the repository root like ds4 resolves it
# against its script directory; --dir is a normal command-line path (against $PWD).
resolve_dest_dir() {
    if [[ -n $DEST_DIR ]]; then
        [[ $DEST_DIR == /* ]] || DEST_DIR="$PWD/$DEST_DIR"
    elif [[ -n ${DS4_GGUF_DIR:-} ]]; then
        DEST_DIR="$DS4_GGUF_DIR"
        [[ $DEST_DIR == /* ]] || DEST_DIR="$ROOT/$DEST_DIR"
    else
        DEST_DIR="$ROOT/gguf"
    fi
    DEST_DIR="${DEST_DIR%/}"
}

# ---------------------------------------------------------------- HTTP
WORK_DIR=""
AUTH_ARGS=()

cleanup() { [[ -z $WORK_DIR ]] || rm -rf -- "$WORK_DIR"; }

# The token goes into a mode-600 header file so that it never shows up in `ps`.
prepare_http() {
    WORK_DIR="$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/ds4-download.XXXXXX")"
    trap cleanup EXIT
    if [[ -n $TOKEN ]]; then
        printf 'Authorization: Bearer %s\n' "$TOKEN" >"$WORK_DIR/auth-header"
        AUTH_ARGS=(-H "@$WORK_DIR/auth-header")
    fi
}

# Turns an HTTP status into the message a user can act on.
explain_http() {
    local code=$1 url=$2
    case "$code" in
    401)
        if [[ -n $TOKEN ]]; then
            echo "the hub rejected the token from $TOKEN_SOURCE (HTTP 401 Unauthorized) for $url;" \
                "check it at https://huggingface.co/settings/tokens"
        else
            echo "the hub requires authentication (HTTP 401 Unauthorized) for $url;" \
                "pass --token TOKEN, set HF_TOKEN, or log in with 'huggingface-cli login'"
        fi
        ;;
    403) echo "access denied (HTTP 403 Forbidden) for $url; the token's account may need to" \
        "accept the repository's terms on the hub" ;;
    404) echo "not found (HTTP 404) at $url; is DS4_HF_ENDPOINT ($ENDPOINT) right?" ;;
    000) echo "no HTTP answer from $url (connection failed)" ;;
    *) echo "HTTP $code from $url" ;;
    esac
}

HUB_SHA256=""
HUB_SIZE=""
HUB_ERROR=""

# Reads the file's LFS object from GET /api/models/REPO/tree/REVISION (the endpoint
# huggingface_hub's list_repo_tree uses). Each entry looks like
#   {"type":"file","oid":"<git sha1>","size":N,"path":"F","lfs":{"oid":"<sha256>","size":N,"pointerSize":P}}
# The model-info API calls the same hash "sha256"; both spellings are accepted. The
# repository has a handful of files, far below the listing's page size.
# Sets HUB_SHA256 and HUB_SIZE, or HUB_ERROR and returns 1.
fetch_hub_entry() {
    local file=$1 url="$ENDPOINT/api/models/$REPO/tree/$REVISION"
    local body="$WORK_DIR/tree.json" code
    code="$(curl -sS -L --connect-timeout 30 "${AUTH_ARGS[@]}" -o "$body" -w '%{http_code}' "$url")" ||
        code="${code:-000}"
    if [[ $code != 200 ]]; then
        HUB_ERROR="$(explain_http "$code" "$url")"
        return 1
    fi
    # One entry per line; no whitespace (our file names have none, hashes and
    # numbers neither), so that the greps below see one canonical spelling.
    local entry
    entry="$(tr -d ' \t\r\n' <"$body" | sed 's/},{/}\n{/g' | grep -F "\"path\":\"$file\"" | head -n 1)" || true
    if [[ -z $entry ]]; then
        HUB_ERROR="$file is not listed in $REPO ($url)"
        return 1
    fi
    local lfs
    lfs="$(grep -o '"lfs":{[^}]*}' <<<"$entry")" || true
    HUB_SHA256="$(grep -oE '"(oid|sha256)":"[0-9a-f]{64}"' <<<"$lfs" | grep -oE '[0-9a-f]{64}' | head -n 1)" || true
    HUB_SIZE="$(grep -oE '"size":[0-9]+' <<<"$lfs" | grep -oE '[0-9]+' | head -n 1)" || true
    if [[ -z $HUB_SHA256 || -z $HUB_SIZE ]]; then
        HUB_ERROR="the hub lists $file without an LFS SHA-256 and size ($url); use --no-verify to skip the check"
        return 1
    fi
}

# curl exit codes worth another try with -C -: connection refused/reset, timeout,
# partial file, empty reply, receive error, HTTP/2 stream error; HTTP 5xx and 429.
is_transient() {
    local rc=$1 code=$2
    case "$rc" in
    7 | 18 | 28 | 52 | 55 | 56 | 92) return 0 ;;
    22) [[ $code == 429 || $code == 5?? ]] ;;
    *) return 1 ;;
    esac
}

# Appends to FILE.part with curl -C - (the server answers a Range request with the
# missing tail), retrying transient failures. --fail keeps error pages out of .part.
fetch_into_part() {
    local url=$1 part=$2 attempt=0 rc code
    while :; do
        rc=0
        code="$(curl -fL --progress-meter --connect-timeout 30 -C - "${AUTH_ARGS[@]}" \
            -o "$part" -w '%{http_code}' "$url")" || rc=$?
        ((rc == 0)) && return 0
        # 416 to "bytes=N-": the .part already holds the whole file (seen with
        # --no-verify, where the hub's size is not known beforehand).
        if ((rc == 22)) && [[ $code == 416 && -s $part ]]; then
            note "the server has no bytes past the end of $(basename "$part"): it is complete"
            return 0
        fi
        # curl may leave an empty .part behind when the very first request fails.
        if [[ -f $part && ! -s $part ]]; then
            rm -f -- "$part"
        fi
        if ! is_transient "$rc" "$code"; then
            if ((rc == 22)); then
                die "$(explain_http "$code" "$url")"
            fi
            if ((rc == 33)); then
                die "the server ignored the Range request, so $(basename "$part") cannot be" \
                    "resumed from $url; remove $part to download from scratch"
            fi
            die "curl failed (exit $rc) downloading $url"
        fi
        ((attempt < RETRIES)) ||
            die "download of $url still failing after $RETRIES retries (curl exit $rc);" \
                "run the script again to resume from $(basename "$part")"
        attempt=$((attempt + 1))
        local have=0
        [[ -f $part ]] && have="$(file_size "$part")"
        note "transfer interrupted (curl exit $rc); retrying from $(human_size "$have")" \
            "(attempt $attempt of $RETRIES)"
        sleep "$RETRY_DELAY"
    done
}

# ---------------------------------------------------------------- per file
verify_part() {
    local part=$1 final=$2 actual
    local have
    have="$(file_size "$part")"
    if ((have != HUB_SIZE)); then
        die "$(basename "$part") is $have bytes but the hub's file is $HUB_SIZE bytes;" \
            "kept it at $part (remove it to download again)"
    fi
    note "verifying SHA-256 of $(basename "$final") ($(human_size "$have"))"
    actual="$(sha256sum -- "$part" | cut -d ' ' -f 1)"
    if [[ $actual != "$HUB_SHA256" ]]; then
        die "SHA-256 mismatch for $(basename "$final"): the hub publishes $HUB_SHA256," \
            "the download hashes to $actual. The data is kept at $part; remove it and" \
            "run again to download from scratch."
    fi
    note "SHA-256 OK ($actual)"
}

download_file() {
    local file=$1
    local final="$DEST_DIR/$file" part="$DEST_DIR/$file.part"
    local url="$ENDPOINT/$REPO/resolve/$REVISION/$file"

    # aria2 keeps its own state beside the file; mixing tools would corrupt it.
    if [[ -e "$final.aria2" ]]; then
        die "$final.aria2 exists: finish that aria2 download or remove it and $final"
    fi
    if [[ -s $final ]]; then
        local have
        have="$(file_size "$final")"
        if [[ -n $HUB_SIZE ]] && ((have != HUB_SIZE)); then
            die "$final is $have bytes but the hub's file is $HUB_SIZE bytes" \
                "(an older upload or a damaged copy?); remove it to download again"
        fi
        note "already downloaded: $final ($(human_size "$have"))"
        return 0
    fi

    mkdir -p -- "$DEST_DIR"
    local have=0
    [[ -f $part ]] && have="$(file_size "$part")"
    if ((VERIFY)) && ((have > HUB_SIZE)); then
        die "$part is larger ($have bytes) than the hub's file ($HUB_SIZE bytes); remove it"
    fi
    if ((VERIFY)) && ((have == HUB_SIZE)); then
        note "$file.part is complete ($(human_size "$have"))"
    else
        local total="size unknown"
        ((VERIFY)) && total="$(human_size "$HUB_SIZE")"
        note "downloading $file ($total) from $url"
        ((have == 0)) || note "resuming $file.part at $(human_size "$have")"
        fetch_into_part "$url" "$part"
    fi
    if ((VERIFY)); then
        verify_part "$part" "$final"
    else
        note "warning: --no-verify: $file was not checked against the hub's SHA-256"
    fi
    mv -f -- "$part" "$final"
    note "saved $final ($(human_size "$(file_size "$final")"))"
}

# ds4flash.gguf is the default -m of every binary. A regular file there is somebody's
# model, not our link: refuse rather than delete it (ds4's ln -sfn would).
update_link() {
    local final=$1 link="$ROOT/ds4flash.gguf"
    if [[ -e $link && ! -L $link ]]; then
        die "$link is a regular file, not a link; move it away to let the script link $final"
    fi
    ln -sfn -- "$final" "$link"
    note "linked $link -> $final"
}

print_plan() {
    local file=$1
    local url="$ENDPOINT/$REPO/resolve/$REVISION/$file"
    echo "dry run: nothing is downloaded or changed"
    echo "  target:      $TARGET"
    echo "  url:         $url"
    echo "  destination: $DEST_DIR/$file"
    echo "  token:       ${TOKEN_SOURCE:-none}${TOKEN:+ (value not shown)}"
    if ((VERIFY)); then
        if fetch_hub_entry "$file"; then
            echo "  hub size:    $(human_size "$HUB_SIZE") ($HUB_SIZE bytes)"
            echo "  hub sha256:  $HUB_SHA256"
        else
            echo "  hub entry:   unavailable: $HUB_ERROR"
        fi
    fi
    local final="$DEST_DIR/$file" part="$DEST_DIR/$file.part"
    if [[ -e "$final.aria2" ]]; then
        echo "  would stop:  $final.aria2 exists"
    elif [[ -s $final ]]; then
        echo "  would skip:  already downloaded ($(human_size "$(file_size "$final")"))"
    elif [[ -f $part ]]; then
        echo "  would:       resume $file.part at $(human_size "$(file_size "$part")"), then verify"
    else
        echo "  would:       download into $file.part, verify, rename to $file"
    fi
    if [[ $TARGET != mtp ]]; then
        echo "  would link:  $ROOT/ds4flash.gguf -> $final"
    fi
}

main() {
    parse_args "$@"
    resolve_token
    resolve_dest_dir
    local file
    file="$(file_for_target "$TARGET")"
    prepare_http

    if ((DRY_RUN)); then
        print_plan "$file"
        return 0
    fi
    if ((VERIFY)); then
        fetch_hub_entry "$file" || die "$HUB_ERROR"
        note "$file: $(human_size "$HUB_SIZE"), sha256 $HUB_SHA256"
    fi
    download_file "$file"
    if [[ $TARGET == mtp ]]; then
        note "MTP model ready: pass --mtp $DEST_DIR/$file --mtp-draft 2 to use it"
    else
        update_link "$DEST_DIR/$file"
    fi
}

main "$@"
