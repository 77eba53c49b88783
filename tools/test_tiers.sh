#!/bin/bash
# `make test`: the three tiers in order, each one's wall time and slowest tests, then a summary.
#   unit   the kit and the host package, no docker               tests/unit
#   hosts  systemd container hosts, reached by ssh like a Spark   tests/hosts (SPARKSTACK_TESTHOST_DRIVER=container)
#          on Debian 12, then its deploy loop (-m release_loop) again on Debian 13 (tier "trixie")
#   vm     a smoke on the QEMU VM (TCG)                          tests/vm    (SPARKSTACK_TESTHOST_DRIVER=vm)
# TIERS="unit hosts" limits the run. The host services (dockerd, lxcfs) are started if needed and stopped after.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BIN=.venv/bin
TIERS=${TIERS:-unit hosts trixie vm}
summary=()
status=0

tools/host_services.sh start || exit 1
trap 'tools/host_services.sh stop' EXIT

run_tier() {  # run_tier NAME DRIVER PYTEST-ARGS...
    local name=$1 driver=$2
    shift 2
    echo "=== tier $name ==="
    local started=$SECONDS
    SPARKSTACK_TESTHOST_DRIVER=$driver "$BIN/pytest" "$@" --durations=10 --durations-min=1
    local rc=$?
    local took=$((SECONDS - started))
    summary+=("$(printf '%-6s %4d s (%d min %02d s)  %s' "$name" "$took" $((took / 60)) $((took % 60)) \
        "$([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)")")")
    [ $rc = 0 ] || status=1
}

started_all=$SECONDS
for tier in $TIERS; do
    case $tier in
        unit) run_tier unit container tests/unit ;;
        hosts) SPARKSTACK_TESTHOST_RELEASE=bookworm run_tier hosts container tests/hosts ;;
        trixie) SPARKSTACK_TESTHOST_RELEASE=trixie run_tier trixie container tests/hosts -m release_loop ;;
        vm) run_tier vm vm tests/vm ;;
        *) echo "unknown tier $tier" >&2; exit 2 ;;
    esac
done
total=$((SECONDS - started_all))
echo "=== make test: tier times ==="
printf '%s\n' "${summary[@]}"
printf 'all    %4d s (%d min %02d s)\n' "$total" $((total / 60)) $((total % 60))
exit $status
