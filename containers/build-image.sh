#!/usr/bin/env bash
# Build the qrpo sandbox image (a SIF) with Apptainer.
#
#   containers/build-image.sh [--recipe debian|docker] [--output PATH] [--force]
#                             [--mirror URL] [--apptainer PATH] [--sandbox-dir DIR]
#
# --recipe debian (default): containers/sandbox-debian.def, Debian 12 minbase + python3 +
#     python3-sortedcontainers, bootstrapped with debootstrap from the Debian mirror found in the
#     host's apt sources (or --mirror / $DEBIAN_MIRROR). Works offline except for that mirror.
#     Needs debootstrap, and root -- or, for an ordinary user, `--fakeroot` with an /etc/subuid entry
#     and the setuid newuidmap/newgidmap (Debian package uidmap): debootstrap must mknod and chown.
#     As root, debootstrap is apt-get installed if missing.
# --recipe docker: containers/sandbox.def, docker://python:3.12-slim + pip install sortedcontainers
#     (needs Docker Hub and PyPI; for clusters).
#
# Default output: ${XDG_CACHE_HOME:-$HOME/.cache}/qrpo/sandbox-debian.sif (docker: sandbox.sif).
# Skips the build if the output exists (unless --force). --sandbox-dir DIR also unpacks the SIF
# into a sandbox directory (faster container starts where squashfuse is unavailable).
# Apptainer: --apptainer, else $APPTAINER, else `apptainer` on PATH, else the one that
# containers/install-apptainer.sh puts in ${XDG_DATA_HOME:-$HOME/.local/share}/qrpo/apptainer.
# The last line of stdout is the absolute path of the image.
set -euo pipefail

log() { printf 'build-image: %s\n' "$*"; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE=debian
OUTPUT=""
FORCE=0
MIRROR="${DEBIAN_MIRROR:-}"
APPTAINER_BIN="${APPTAINER:-}"
SANDBOX_DIR=""

while [ $# -gt 0 ]; do
    case "$1" in
        --recipe) RECIPE="${2:?--recipe needs debian or docker}"; shift 2 ;;
        --recipe=*) RECIPE="${1#*=}"; shift ;;
        --output|-o) OUTPUT="${2:?--output needs a path}"; shift 2 ;;
        --output=*) OUTPUT="${1#*=}"; shift ;;
        --force|-f) FORCE=1; shift ;;
        --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
        --mirror=*) MIRROR="${1#*=}"; shift ;;
        --apptainer) APPTAINER_BIN="${2:?--apptainer needs a path}"; shift 2 ;;
        --apptainer=*) APPTAINER_BIN="${1#*=}"; shift ;;
        --sandbox-dir) SANDBOX_DIR="${2:?--sandbox-dir needs a directory}"; shift 2 ;;
        --sandbox-dir=*) SANDBOX_DIR="${1#*=}"; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/qrpo"
case "$RECIPE" in
    debian) DEF="$HERE/sandbox-debian.def"; : "${OUTPUT:=$CACHE/sandbox-debian.sif}" ;;
    docker) DEF="$HERE/sandbox.def"; : "${OUTPUT:=$CACHE/sandbox.sif}" ;;
    *) die "--recipe must be debian or docker, not '$RECIPE'" ;;
esac
[ -f "$DEF" ] || die "definition file $DEF not found"
OUTPUT="$(realpath -m "$OUTPUT")"
[ -n "$SANDBOX_DIR" ] && SANDBOX_DIR="$(realpath -m "$SANDBOX_DIR")"

# debootstrap, chroot, mknod... live in sbin, which is not on an ordinary user's PATH on Debian;
# debootstrap's arch-test calls `chroot` and fails with "Unable to execute target architecture".
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# --- apptainer ------------------------------------------------------------------------------------
if [ -z "$APPTAINER_BIN" ]; then
    APPTAINER_BIN="$(command -v apptainer 2>/dev/null || true)"
fi
if [ -z "$APPTAINER_BIN" ]; then
    cand="${APPTAINER_PREFIX:-${XDG_DATA_HOME:-$HOME/.local/share}/qrpo/apptainer}/bin/apptainer"
    [ -x "$cand" ] && APPTAINER_BIN="$cand"
fi
[ -n "$APPTAINER_BIN" ] && [ -x "$APPTAINER_BIN" ] \
    || die "apptainer not found: run containers/install-apptainer.sh first (or pass --apptainer PATH)"
log "apptainer: $APPTAINER_BIN ($("$APPTAINER_BIN" version 2>/dev/null || echo '?'))"

make_sandbox() {
    [ -n "$SANDBOX_DIR" ] || return 0
    if [ -e "$SANDBOX_DIR" ] && [ "$FORCE" = 0 ]; then
        log "sandbox directory $SANDBOX_DIR exists; not rebuilding it (use --force)"
        return 0
    fi
    local tmp="$SANDBOX_DIR.partial.$$" t0=$SECONDS
    mkdir -p "$(dirname "$SANDBOX_DIR")"
    rm -rf "$tmp"
    "$APPTAINER_BIN" -q build --sandbox "$tmp" "$OUTPUT" >&2 || { rm -rf "$tmp"; die "could not unpack $OUTPUT into $tmp"; }
    # Directories in the sandbox can be owner-write-protected; make the old one removable.
    [ -e "$SANDBOX_DIR" ] && { chmod -R u+w "$SANDBOX_DIR" 2>/dev/null || true; rm -rf "$SANDBOX_DIR"; }
    mv "$tmp" "$SANDBOX_DIR"
    log "unpacked $OUTPUT into sandbox directory $SANDBOX_DIR in $((SECONDS - t0)) s ($(du -sh "$SANDBOX_DIR" | cut -f1))"
}

if [ -e "$OUTPUT" ] && [ "$FORCE" = 0 ]; then
    log "$OUTPUT already exists; not rebuilding it (use --force)"
    make_sandbox
    printf '%s\n' "$OUTPUT"
    exit 0
fi

# --- build arguments ------------------------------------------------------------------------------
BUILD_ARGS=()
if [ "$(id -u)" != 0 ]; then
    BUILD_ARGS+=(--fakeroot)
fi

if [ "$RECIPE" = debian ]; then
    if [ -z "$MIRROR" ]; then
        # The host's Debian mirror: one-line *.list and deb822 *.sources; prefer the entry that
        # serves the host's own release, never a security mirror. (Same logic as the installer.)
        codename="$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")" || true
        files=()
        [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
        for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] && files+=("$f")
        done
        if [ ${#files[@]} -gt 0 ]; then
            MIRROR="$(awk -v codename="$codename" '
                function consider(uri, suites,   n, i, a, score) {
                    if (uri !~ /^(https?|ftp|file):/) return
                    sub(/\/+$/, "", uri)
                    score = 1
                    if (uri ~ /\/debian$/) score = 2
                    n = split(suites, a, /[ \t]+/)
                    for (i = 1; i <= n; i++) if (codename != "" && a[i] == codename) score = 3
                    if (uri ~ /security/) score = 0
                    if (score > best) { best = score; bestUri = uri }
                }
                function flush(   n, i, u) {
                    if (isdeb && uris != "") { n = split(uris, u, /[ \t]+/); for (i = 1; i <= n; i++) if (u[i] != "") consider(u[i], suites) }
                    isdeb = 0; uris = ""; suites = ""
                }
                BEGIN { best = 0; bestUri = "" }
                FILENAME ~ /\.sources$/ {
                    if (FNR == 1) flush()
                    if ($0 ~ /^[ \t]*$/) { flush(); next }
                    if ($0 ~ /^[ \t]*#/) next
                    if (tolower($1) == "types:" && $0 ~ /[ \t]deb([ \t]|$)/) isdeb = 1
                    if (tolower($1) == "uris:") { uris = $0; sub(/^[^:]*:[ \t]*/, "", uris) }
                    if (tolower($1) == "suites:") { suites = $0; sub(/^[^:]*:[ \t]*/, "", suites) }
                    if (tolower($1) == "enabled:" && tolower($2) == "no") uris = ""
                    next
                }
                {
                    if (FNR == 1) flush()
                    if ($1 != "deb") next
                    i = 2
                    if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    consider($i, $(i + 1))
                }
                END { flush(); if (bestUri != "") print bestUri }
            ' "${files[@]}")"
        fi
        [ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}; pass --mirror URL or set DEBIAN_MIRROR"
        log "Debian mirror from the host's apt sources: $MIRROR"
    else
        log "Debian mirror: $MIRROR"
    fi
    BUILD_ARGS+=(--build-arg "MIRROR=$MIRROR")

    if ! command -v debootstrap >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            log "debootstrap not found: apt-get install debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 \
                || die "apt-get install debootstrap failed"
        else
            die "debootstrap not found: as root, run 'apt-get install debootstrap' (or use --recipe docker)"
        fi
    fi
    if [ "$(id -u)" != 0 ]; then
        if ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null && ! grep -q "^$(id -u):" /etc/subuid 2>/dev/null; then
            die "building from debootstrap as an ordinary user needs an /etc/subuid entry for $(id -un) and newuidmap (package uidmap); or build as root (the image is then usable by any user)"
        fi
        command -v newuidmap >/dev/null 2>&1 \
            || die "building from debootstrap as an ordinary user needs the setuid newuidmap/newgidmap (as root: apt-get install uidmap); or build as root"
    fi
fi

# --- build ----------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUTPUT")"
TMP_OUT="$OUTPUT.partial.$$.sif"
trap 'rm -f "$TMP_OUT"' EXIT
log "building $OUTPUT from $DEF${BUILD_ARGS[*]:+ (${BUILD_ARGS[*]})}"
t0=$SECONDS
# Apptainer's progress goes to stderr so that stdout stays: messages, then the image path.
if ! "$APPTAINER_BIN" build "${BUILD_ARGS[@]}" "$TMP_OUT" "$DEF" >&2; then
    die "apptainer build failed (see the messages above)"
fi
mv -f "$TMP_OUT" "$OUTPUT"
trap - EXIT
log "built $OUTPUT in $((SECONDS - t0)) s ($(du -h "$OUTPUT" | cut -f1))"
make_sandbox
printf '%s\n' "$OUTPUT"
