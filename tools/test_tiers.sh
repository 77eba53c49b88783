#!/bin/bash
# `make test`: the three tiers, each one's wall time and slowest tests, then a summary.
#   unit    the kit and the host package, no docker                tests/unit
#   hosts   systemd container hosts, reached by ssh like a Spark    tests/hosts, on Debian 12, in parallel shards,
#           each shard on its own set of hosts (SPARKSTACK_TESTHOST_SET) with its own registry, hub and lock;
#           the deploy loop (-m release_loop) runs once more on Debian 13 as one more shard ("trixie")
#   vm      a smoke on the QEMU VM (TCG)                            tests/vm, beside the unit tier and the hosts
#           shards: it is the longest path, so it starts first, as soon as its image and the stand-in are built
# The container images are built (niced) while the unit tier runs. TIERS="unit hosts vm" picks tiers (default
# all). The host services (dockerd, lxcfs) are started if needed and stopped after.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BIN=.venv/bin
TIERS=${TIERS:-unit hosts vm}
LOGS=build/test-logs
summary=()
status=0
mkdir -p "$LOGS"

tools/host_services.sh start || exit 1
trap 'tools/host_services.sh stop' EXIT

# The hosts tier's shards: SET:RELEASE:PYTEST-ARGS. Balanced by their measured times (README, "Test tiers").
SHARDS=(
    "0:bookworm:tests/hosts/test_0_nodes.py tests/hosts/test_9_cluster.py"
    "1:bookworm:tests/hosts/test_1_deploy_loop.py tests/hosts/test_2_switch.py tests/hosts/test_3_verify.py tests/hosts/test_4_engine_truth.py tests/hosts/test_5_no_secrets_in_failures.py"
    "2:bookworm:tests/hosts/test_6_memory_guards.py tests/hosts/test_7_artifacts.py tests/hosts/test_8_frontdoor.py"
    "3:trixie:tests/hosts -m release_loop"
)

record() {  # record NAME SECONDS RC
    summary+=("$(printf '%-12s %4d s (%d min %02d s)  %s' "$1" "$2" $(($2 / 60)) $(($2 % 60)) \
        "$([ "$3" = 0 ] && echo passed || echo "FAILED (exit $3)")")")
    [ "$3" = 0 ] || status=1
}

build_images() {  # build_images hosts|vm: what that tier needs, cached by recipe (the stand-in: both, built once)
    local started=$SECONDS
    FOR=$1 "$BIN/python" - <<'EOF' > "$LOGS/images-$1.log" 2>&1
import os
from concurrent.futures import ThreadPoolExecutor
from sparkstack import testhost_container, testvm
from tests.standin_engine import image

jobs = {"hosts": [lambda: testhost_container.ensure_image("bookworm"), lambda: testhost_container.ensure_image("trixie"),
                  image.load_here],
        "vm": [lambda: testvm.image().complete or testvm.build_image(testvm.image()), image.load_here]}[os.environ["FOR"]]
with ThreadPoolExecutor(len(jobs)) as pool:
    for future in [pool.submit(job) for job in jobs]:
        future.result()
EOF
    local rc=$?
    echo "images for $1: built or found in $((SECONDS - started)) s (exit $rc)" >> "$LOGS/images-$1.log"
    return $rc
}

run_unit() {
    echo "=== tier unit ==="
    local started=$SECONDS
    # Niced a little: the VM's image builds meanwhile, and the VM is the longest path of the run.
    nice -n 5 "$BIN/pytest" tests/unit -n 4 --durations=10 --durations-min=1
    record unit $((SECONDS - started)) $?
}

run_hosts() {
    echo "=== tier hosts: ${#SHARDS[@]} shards in parallel ==="
    local started=$SECONDS pids=() shard
    for shard in "${SHARDS[@]}"; do
        IFS=: read -r set release args <<<"$shard"
        mkdir -p "$PWD/build/locks/set-$set"
        (
            shard_started=$SECONDS
            # shellcheck disable=SC2086 # args is a list of words
            SPARKSTACK_TESTHOST_DRIVER=container SPARKSTACK_TESTHOST_SET=$set SPARKSTACK_TESTHOST_RELEASE=$release \
                SPARKSTACK_LOCK_DIR=$PWD/build/locks/set-$set \
                "$BIN/pytest" -p no:cacheprovider $args --durations=10 --durations-min=1 >"$LOGS/hosts-$set.log" 2>&1
            echo "$? $((SECONDS - shard_started))" >"$LOGS/hosts-$set.rc"
        ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    for shard in "${SHARDS[@]}"; do
        IFS=: read -r set release args <<<"$shard"
        echo "--- shard $set ($release): $args ---"
        cat "$LOGS/hosts-$set.log"
        read -r rc took <"$LOGS/hosts-$set.rc"
        record "hosts/$set" "$took" "$rc"
    done
    summary+=("$(printf '%-12s %4d s (the shards in parallel)' hosts $((SECONDS - started)))")
}

start_vm() {  # in the background, its image first; report_vm waits for it
    mkdir -p "$PWD/build/locks/vm"
    rm -f "$LOGS/vm.rc"
    (
        if ! build_images vm; then
            cat "$LOGS/images-vm.log" > "$LOGS/vm.log"
            echo "1 0" >"$LOGS/vm.rc"
            exit 1
        fi
        vm_started=$SECONDS
        # Ahead of the hosts tier: a contended guest spins on the locks of its descheduled vCPUs (sparkstack/testvm.py),
        # and the smoke is one long serial path. As root (CI) it runs at -10; elsewhere `nice` says it cannot and
        # the tier runs at the default priority.
        SPARKSTACK_TESTHOST_DRIVER=vm SPARKSTACK_LOCK_DIR=$PWD/build/locks/vm \
            nice -n -10 "$BIN/pytest" -p no:cacheprovider tests/vm --durations=10 --durations-min=1 >"$LOGS/vm.log" 2>&1
        echo "$? $((SECONDS - vm_started))" >"$LOGS/vm.rc"
    ) &
    vm_pid=$!
}

report_vm() {
    wait "$vm_pid"
    local waited=$?
    echo "=== tier vm ==="
    tail -1 "$LOGS/images-vm.log"
    cat "$LOGS/vm.log"
    local rc took
    read -r rc took <"$LOGS/vm.rc" 2>/dev/null || { rc=$waited; [ "$rc" != 0 ] || rc=1; took=0; }
    record vm "$took" "$rc"
}

started_all=$SECONDS
vm_pid=""
case " $TIERS " in *" vm "*) start_vm ;; esac
images_pid=""
# Niced: the unit tier and the VM keep their pace; these builds take what is left.
case " $TIERS " in *" hosts "*) (renice -n 19 -p $BASHPID >/dev/null; build_images hosts) & images_pid=$! ;; esac
case " $TIERS " in *" unit "*) run_unit ;; esac
if [ -n "$images_pid" ]; then
    wait "$images_pid" || { cat "$LOGS/images-hosts.log"; echo "building the test images failed" >&2; exit 1; }
    tail -1 "$LOGS/images-hosts.log"
fi
case " $TIERS " in *" hosts "*) run_hosts ;; esac
[ -z "$vm_pid" ] || report_vm
total=$((SECONDS - started_all))
echo "=== make test: tier times ==="
printf '%s\n' "${summary[@]}"
printf 'all          %4d s (%d min %02d s)\n' "$total" $((total / 60)) $((total % 60))
exit $status
