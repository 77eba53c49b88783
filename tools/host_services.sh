#!/bin/bash
# The test machine's services for the hosts tier: dockerd (Debian's docker.io) and lxcfs.
#   tools/host_services.sh start   start each one that is not running; remember which ones this started
#   tools/host_services.sh stop    stop only what `start` started (a developer's own dockerd stays up)
# Nothing starts them on these machines (no systemd as PID 1), so `make test` does it here.
set -euo pipefail
STATE_DIR="${SPARKSTACK_CACHE:-$HOME/.cache/sparkstack}/host-services"
LXCFS_ROOT=/var/lib/lxcfs
mkdir -p "$STATE_DIR"
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

docker_answers() { docker info --format '{{.ServerVersion}}' >/dev/null 2>&1; }
lxcfs_mount_left() { awk -v d="$LXCFS_ROOT" '$2 == d' /proc/mounts | grep -q .; }
lxcfs_mounted() { [ -f "$LXCFS_ROOT/proc/meminfo" ] && head -1 "$LXCFS_ROOT/proc/meminfo" >/dev/null 2>&1; }

wait_for() {  # wait_for WHAT CHECK LOG
    for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
    echo "host services: $1 did not come up within 30 s; its log, $3:" >&2
    tail -20 "$3" >&2
    return 1
}

start() {
    if ! lxcfs_mounted; then
        # An lxcfs that died (a killed session, a machine image) leaves its FUSE mount behind, and every
        # access to it fails with "Transport endpoint is not connected": take it away before starting anew.
        if lxcfs_mount_left; then
            $sudo umount -l "$LXCFS_ROOT"
            echo "host services: removed a dead lxcfs mount at $LXCFS_ROOT"
        fi
        $sudo mkdir -p "$LXCFS_ROOT"
        # -u: no swap virtualization. With it, lxcfs 5 sometimes reports SwapFree as 18446744073709551360 kB (an
        # unsigned underflow; 20 of 300 reads on a node without swap), and earlyoom, which parses it, exits and is
        # restarted: drift then caught earlyoom "not running" at random. The nodes have no swap either way.
        $sudo lxcfs -u "$LXCFS_ROOT" >"$STATE_DIR/lxcfs.log" 2>&1 &
        echo $! >"$STATE_DIR/lxcfs.pid"
        wait_for lxcfs lxcfs_mounted "$STATE_DIR/lxcfs.log"
        echo "host services: started lxcfs at $LXCFS_ROOT (pid $(cat "$STATE_DIR/lxcfs.pid"))"
    fi
    if ! docker_answers; then
        $sudo dockerd >"$STATE_DIR/dockerd.log" 2>&1 &
        echo $! >"$STATE_DIR/dockerd.pid"
        wait_for dockerd docker_answers "$STATE_DIR/dockerd.log"
        echo "host services: started dockerd (pid $(cat "$STATE_DIR/dockerd.pid"))"
    fi
}

stop_one() {  # stop_one NAME
    local pidfile="$STATE_DIR/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
        $sudo kill "$pid"
        for _ in $(seq 1 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
        echo "host services: stopped $1 (pid $pid)"
    fi
    rm -f "$pidfile"
}

stop() {
    # The test hosts first (only in a dockerd this started): they hold lxcfs's files open.
    if [ -f "$STATE_DIR/dockerd.pid" ] && docker_answers; then
        docker ps -aq --filter label=sparkstack.testhost=1 | xargs -r docker rm -f >/dev/null
    fi
    stop_one dockerd
    if [ -f "$STATE_DIR/lxcfs.pid" ]; then
        stop_one lxcfs
        $sudo umount -l "$LXCFS_ROOT" 2>/dev/null || true
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
