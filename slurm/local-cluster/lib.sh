# shellcheck shell=bash disable=SC2034
# Shared helpers for the local single-node SLURM cluster scripts (up, down, status).
# Sourced, not executed.

# Daemons in start order. `down` stops them in reverse.
QRPO_DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

die() { echo "local-cluster: error: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

# parse_state_dir_arg ARGS... : sets STATE_DIR from --state-dir / QRPO_SLURM_DIR / default,
# and leaves the other arguments in REST_ARGS.
parse_common_args() {
    # Default: a place every user can traverse. munged refuses a key or socket under a directory
    # without execute permission for all ("execute permissions for all required on /root"), and
    # root's home is 0700 on most machines, so a default under ~ fails exactly where `up` runs.
    STATE_DIR="${QRPO_SLURM_DIR:-/var/tmp/qrpo-slurm}"
    REST_ARGS=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --state-dir) [ $# -ge 2 ] || die "--state-dir needs a directory"; STATE_DIR="$2"; shift 2 ;;
            --state-dir=*) STATE_DIR="${1#*=}"; shift ;;
            *) REST_ARGS+=("$1"); shift ;;
        esac
    done
    case "$STATE_DIR" in /*) ;; *) STATE_DIR="$PWD/$STATE_DIR" ;; esac
    STATE_DIR="${STATE_DIR%/}"
    set_paths
}

set_paths() {
    ETC_DIR="$STATE_DIR/etc"
    RUN_DIR="$STATE_DIR/run"
    LOG_DIR="$STATE_DIR/log"
    SPOOL_DIR="$STATE_DIR/spool"
    MUNGE_DIR="$STATE_DIR/munge"
    DB_DIR="$STATE_DIR/mariadb"
    SLURM_CONF_FILE="$ETC_DIR/slurm.conf"
    SLURMDBD_CONF_FILE="$ETC_DIR/slurmdbd.conf"
    MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
    MUNGE_KEY="$MUNGE_DIR/munge.key"
    DB_SOCKET="$DB_DIR/mariadbd.sock"
    DB_DATADIR="$DB_DIR/data"
    ENV_FILE="$STATE_DIR/env.sh"
    PORTS_FILE="$ETC_DIR/ports"
}

pid_file() { echo "$RUN_DIR/$1.pid"; }
log_file() { echo "$LOG_DIR/$1.log"; }

# daemon_pid NAME : prints the pid if the daemon named NAME is alive (per its pid file, and the
# process really is that program, so a recycled pid is not mistaken for it); returns 1 otherwise.
daemon_pid() {
    local name="$1" f pid comm
    f="$(pid_file "$name")"
    [ -r "$f" ] || return 1
    pid="$(tr -dc '0-9' < "$f")"
    [ -n "$pid" ] || return 1
    [ -r "/proc/$pid/comm" ] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    # mariadbd's comm is "mariadbd" (or "mysqld" on older installs).
    case "$name:$comm" in
        "$name:$name"|mariadbd:mysqld) echo "$pid"; return 0 ;;
    esac
    return 1
}

# Process ids of slurmstepd processes that belong to this cluster: they hold the step sockets
# that live in our SlurmdSpoolDir.
our_slurmstepd_pids() {
    local spool="$SPOOL_DIR/slurmd" inodes pid fd link ino
    [ -d "$spool" ] || return 0
    inodes=" $(awk -v p="$spool/" 'index($8, p) == 1 {print $7}' /proc/net/unix 2>/dev/null | tr '\n' ' ') "
    [ "$inodes" != "  " ] || return 0
    for pid in $(pgrep -x slurmstepd 2>/dev/null); do
        for fd in /proc/"$pid"/fd/*; do
            link="$(readlink "$fd" 2>/dev/null)" || continue
            case "$link" in socket:\[*\]) ino="${link#socket:[}"; ino="${ino%]}" ;; *) continue ;; esac
            case "$inodes" in *" $ino "*) echo "$pid"; break ;; esac
        done
    done
}

load_ports() {
    if [ -r "$PORTS_FILE" ]; then
        # shellcheck disable=SC1090
        . "$PORTS_FILE"
    fi
}
