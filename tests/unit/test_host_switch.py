"""llm-switch and the memory gate and guard, run unchanged against a fake Spark (tests/unit/fakehost.py).

The same behaviours run for real on the test hosts (tests/hosts/test_2_switch.py, test_6_memory_guards.py); here
each takes milliseconds, and timeouts of minutes pass on the fake clock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sparkstack_host import memguard, switch
from tests.unit.fakehost import Container, FakeHost


@pytest.fixture
def host(tmp_path, monkeypatch) -> FakeHost:
    return FakeHost(tmp_path, monkeypatch)


def switch_to(host: FakeHost, word: str, variant: str | None = None) -> int:
    return switch.switch_to(switch.load_registry(), word, variant)


def started_units(host: FakeHost) -> list[str]:
    return [c[2] for c in host.commands if c[:2] == ["systemctl", "start"]]


def test_a_switch_stops_the_hot_model_gates_on_memory_and_waits_until_the_new_one_serves(host, capsys):
    assert switch_to(host, "qwen") == 0
    assert host.hot() == ["qwen36"]
    assert switch_to(host, "mistral") == 0
    out = capsys.readouterr().out
    assert host.hot() == ["mistral4"]
    assert "stopping qwen36 (vllm-qwen36.service)" in out
    assert "room for mistral4:" in out
    assert "mistral4 (variant safer-eagle) is hot on 127.0.0.1:" in out
    # The gate ran before the start, never after: a model never loads into memory that is not free.
    gate = next(i for i, c in enumerate(host.commands) if c[-2:] == ["wait-for-room", "mistral4"])
    assert gate < host.commands.index(["systemctl", "start", "sglang-mistral4.service"])


def test_the_variant_asked_for_is_the_one_the_container_runs(host):
    assert switch_to(host, "mistral4", "rollback") == 0
    assert host.containers["sparkstack-mistral4"].variant == "rollback"
    assert switch.variant_in_use("mistral4") == "rollback"


def test_an_unknown_variant_or_model_is_refused_before_anything_stops(host):
    switch_to(host, "qwen")
    for word, variant, message in (("mistral4", "fastest", "has no variant 'fastest'"),
                                   ("llama", None, "unknown model 'llama'; known: mistral4 (mistral), qwen36 (qwen)")):
        with pytest.raises(switch.SwitchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            switch_to(host, word, variant)
    assert host.hot() == ["qwen36"]


def test_a_second_switch_to_the_hot_model_changes_nothing(host, capsys):
    switch_to(host, "qwen")
    before = len(started_units(host))
    assert switch_to(host, "qwen36") == 0
    assert len(started_units(host)) == before
    assert "qwen36 (variant default) is already hot" in capsys.readouterr().out


def test_a_model_whose_launch_script_changed_is_restarted_not_called_hot(host, capsys):
    switch_to(host, "qwen")
    with open(host.model("qwen36")["launch_script"], "a") as handle:
        handle.write("--max-model-len 65536\n")
    assert switch_to(host, "qwen") == 0
    assert "runs an older rendering of its launch script or unit; restarting it" in capsys.readouterr().out
    assert started_units(host).count("vllm-qwen36.service") == 2


def test_a_missing_image_is_refused_and_the_hot_model_keeps_serving(host):
    switch_to(host, "qwen")
    host.images.discard(host.model("mistral4")["image"])
    with pytest.raises(switch.SwitchError, match="mistral4 cannot start: image .* is not on this host"):
        switch_to(host, "mistral")
    assert host.hot() == ["qwen36"]


def test_a_missing_snapshot_file_is_refused_before_anything_stops(host):
    switch_to(host, "qwen")
    snapshot = host.model("mistral4")["snapshots"][0]
    (host.snapshot_dir(host.registry, snapshot) / snapshot["files"][0]).unlink()
    with pytest.raises(switch.SwitchError, match=f"{snapshot['repo']}@{snapshot['commit'][:12]} \\(file "):
        switch_to(host, "mistral")
    assert host.hot() == ["qwen36"]


def test_an_engine_that_dies_while_loading_fails_the_switch_and_leaves_nothing(host, capsys):
    host.engines["mistral4"].dies_while_loading = True
    with pytest.raises(switch.SwitchError, match="sglang-mistral4.service exited while loading"):
        switch_to(host, "mistral")
    assert host.hot() == []
    assert host.units["sglang-mistral4.service"].active == "inactive"  # stopped and reset, ready for a retry
    assert switch.variant_in_use("mistral4") is None
    assert "--- last log lines of sglang-mistral4.service ---" in capsys.readouterr().err


def test_a_load_that_never_serves_times_out_at_the_profiles_timeout_on_the_clock(host):
    host.engines["qwen36"].load_s = 10_000
    started = host.now
    with pytest.raises(switch.SwitchError, match="qwen36 was not ready after 900 s"):
        switch_to(host, "qwen")
    assert 900 <= host.now - started < 910
    assert host.hot() == []


def test_a_slow_load_inside_the_timeout_succeeds_and_reports_progress(host, capsys):
    host.engines["qwen36"].load_s = 95
    assert switch_to(host, "qwen") == 0
    out = capsys.readouterr().out
    assert "waiting for qwen36: 10/900 s" in out and "waiting for qwen36: 90/900 s" in out
    assert "ready after 95 s" in out


def test_memory_an_engine_hands_back_late_is_waited_for(host, capsys):
    # qwen36 keeps its 67 GB for 40 s after its container is gone; mistral4 needs 96 + 8 GB of 119.7 (its claim: 0.75 x 128 GB).
    host.engines["qwen36"].returns_memory_after_s = 40
    switch_to(host, "qwen")
    assert switch_to(host, "mistral") == 0
    out = capsys.readouterr().out
    assert "waiting for room for mistral4:" in out
    assert "room for mistral4:" in out and "(after 4" in out


def test_memory_that_never_comes_back_refuses_the_start_with_the_numbers(host, capsys):
    host.extra_used_gb = 40  # something outside sparkstack holds 40 GB for good
    with pytest.raises(switch.SwitchError, match="mistral4 was not started: not enough memory"):
        switch_to(host, "mistral")
    out = capsys.readouterr().out
    assert "73.70 GB available < 96 GB for mistral4 + 8 GB reserve = 104 GB" in out
    assert "still after waiting 180 s" in out and "largest memory users: 1." in out
    assert host.hot() == [] and "sglang-mistral4.service" not in started_units(host)


def test_a_model_larger_than_the_host_is_refused_at_once(host, capsys):
    host.total_gb = 64
    started = host.now
    with pytest.raises(switch.SwitchError):
        switch_to(host, "mistral")
    assert "the host has 64.0 GB in all, less than 96 GB for mistral4" in capsys.readouterr().out
    assert host.now == started


def test_a_worker_lent_to_a_cluster_model_refuses_a_local_switch_and_names_the_head(host):
    host.model("qwen36")["cluster"] = {"rank": 1, "head": "spark-a", "head_address": "192.168.100.10",
                                       "nodes": [{"name": "spark-a"}, {"name": "spark-b"}]}
    host.rewrite_registry()
    (host.root / "run" / "cluster.json").write_text(json.dumps({"model": "qwen36", "since": 1.7e9 + host.now}))
    with pytest.raises(switch.SwitchError, match=r"lent to cluster model qwen36 \(rank 1; head spark-a at "
                                                 r"192\.168\.100\.10\)"):
        switch_to(host, "mistral")
    assert host.hot() == []


def test_a_stale_lent_marker_is_ignored_once_its_window_is_over(host):
    host.model("qwen36")["cluster"] = {"rank": 1, "head": "spark-a", "head_address": "192.168.100.10", "nodes": []}
    host.rewrite_registry()
    (host.root / "run" / "cluster.json").write_text(json.dumps({"model": "qwen36", "since": 1.7e9 + host.now}))
    host.sleep(600 + 180 + 900 + 300)
    assert switch_to(host, "mistral") == 0


def test_none_stops_every_model(host, capsys):
    switch_to(host, "qwen")
    assert switch.switch_none(switch.load_registry()) == 0
    assert host.hot() == []
    assert "no model is hot" in capsys.readouterr().out


def test_status_reads_the_hot_model_its_variant_and_the_memory(host):
    switch_to(host, "mistral4", "rollback")
    status = switch.collect_status(switch.load_registry())
    assert status["hot"] == "mistral4"
    entry = next(m for m in status["models"] if m["name"] == "mistral4")
    assert (entry["variant"], entry["ready"], entry["config"]) == ("rollback", True, "current")
    assert status["memory"]["total_gb"] == 119.7
    assert status["memory"]["available_gb"] == pytest.approx(119.7 - 6 - 96, abs=0.1)


def test_status_names_two_running_models_a_conflict(host, capsys):
    switch_to(host, "qwen")
    # Someone ran mistral4's container by hand, past the switch and its memory gate.
    host.containers["sparkstack-mistral4"] = Container("mistral4", "safer-eagle", "", host.now, 20.0)
    status = switch.collect_status(switch.load_registry())
    assert status["hot"] == "CONFLICT" and status["hot_models"] == ["mistral4", "qwen36"]
    switch.print_status(status)
    assert "hot: CONFLICT, more than one model is running: mistral4, qwen36" in capsys.readouterr().out


def test_a_start_by_hand_beside_the_hot_model_is_held_by_the_gate(host, capsys):
    switch_to(host, "qwen")
    host.run(["systemctl", "start", "sglang-mistral4.service"])  # the unit's ExecStartPre is the gate
    assert host.hot() == ["qwen36"]
    assert host.units["sglang-mistral4.service"].active == "failed"
    assert "refusing to start mistral4: 46.70 GB available" in capsys.readouterr().out


def test_the_guard_stops_the_hot_model_after_two_low_readings_and_records_why(host, capsys):
    switch_to(host, "qwen")
    host.extra_used_gb = 40  # available: 119.7 - 6 - 67 - 40 = 6.7 GB, below the 10 GB floor
    stops_before = host.commands.count(["systemctl", "stop", "vllm-qwen36.service"])

    def stop_after(seconds):
        host.now += seconds
        host.write_meminfo()
        if host.now > 1e9:  # never: the loop ends when the recorded action appears
            raise AssertionError
        if memguard_state().get("last_action"):
            raise StopIteration

    def memguard_state():
        try:
            return json.loads((host.root / "run" / "memory-guard.json").read_text())
        except FileNotFoundError:
            return {}

    host.monkeypatch.setattr(memguard.time, "sleep", stop_after)
    with pytest.raises(StopIteration):
        memguard.watch(str(host.registry_path))
    assert host.hot() == []
    assert host.commands.count(["systemctl", "stop", "vllm-qwen36.service"]) == stops_before + 1
    action = memguard_state()["last_action"]
    assert action["model"] == "qwen36" and action["floor_gb"] == 10.0
    assert "stopped by the memory guard" in action["message"] and "6.70 GB available < 10 GB" in action["message"]


def test_the_guard_keeps_guarding_through_a_registry_it_cannot_read(host, capsys):
    switch_to(host, "qwen")
    readings = []

    def sleep_and_break_things(seconds):
        host.now += seconds
        readings.append(host.now)
        if len(readings) == 3:
            host.registry_path.write_text("{not json")  # a deploy half way, or a hand edit gone wrong
        if len(readings) == 20:
            host.extra_used_gb = 40  # then memory runs low
        host.write_meminfo()
        if (host.root / "run" / "memory-guard.json").exists() and json.loads(
                (host.root / "run" / "memory-guard.json").read_text()).get("last_action"):
            raise StopIteration

    host.monkeypatch.setattr(memguard.time, "sleep", sleep_and_break_things)
    with pytest.raises(StopIteration):
        memguard.watch(str(host.registry_path))
    out = capsys.readouterr().out
    assert out.count("keeping the last registry it read:") == 1 and "is not valid JSON" in out
    assert host.hot() == []  # it still stopped the hot model below the floor


def test_status_never_prints_another_nodes_control_characters(host, capsys):
    # The head (or whoever can write to this node's state) leaves a message that would drive the terminal.
    (host.root / "run" / "cluster-last.json").write_text(json.dumps(
        {"model": "glm51", "message": "stopped\x1b]0;owned\x07\r\x1b[2Jby rank 2", "at": 1.7e9}))
    switch.print_status(switch.collect_status(switch.load_registry()))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("cluster:"))
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "stopped?]0;owned??" in line and "by rank 2" in line


def test_the_door_may_ask_the_switch_socket_for_none_and_nothing_else_beyond_a_model(host, capsys, monkeypatch):
    import io

    switch_to(host, "qwen")
    # Without on-demand switching the socket serves the wedge watch alone: the door may not switch.
    monkeypatch.setattr("sys.stdin", io.StringIO("none\n"))
    assert switch.serve_request(switch.load_registry()) == 1
    assert host.hot() == ["qwen36"] and "on-demand switching is off" in capsys.readouterr().out
    host.registry["frontdoor"]["on_demand"] = True
    host.rewrite_registry()
    monkeypatch.setattr("sys.stdin", io.StringIO("none\n"))
    assert switch.serve_request(switch.load_registry()) == 0
    assert host.hot() == []
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"ok": True, "model": None,
                                                                            "message": "no model is hot"}
    # A variant or a flag is still no model: refused, nothing starts.
    monkeypatch.setattr("sys.stdin", io.StringIO("qwen --variant x\n"))
    assert switch.serve_request(switch.load_registry()) == 1
    assert host.hot() == []


def with_a_set(host: FakeHost) -> None:
    """A set of qwen36 and a small mistral4 (20 GB), as a group's sparkstack_model_sets renders it."""
    host.model("mistral4")["required_memory_gb"] = 20.0
    host.engines["mistral4"].uses_gb = 20.0
    host.registry["sets"] = {"pair": {"members": ["qwen36", "mistral4"], "required_memory_gb": 87.0}}
    host.rewrite_registry()


def test_a_set_starts_its_members_in_order_each_behind_its_gate_and_status_names_the_set(host, capsys):
    with_a_set(host)
    switch_to(host, "mistral")
    assert switch_to(host, "pair") == 0
    assert host.hot() == ["mistral4", "qwen36"]
    assert started_units(host)[-2:] == ["vllm-qwen36.service", "sglang-mistral4.service"]
    # Each member waited for its own room, the second with the first already loaded.
    gates = [c[-1] for c in host.commands if c[-2:-1] == ["wait-for-room"]]
    assert gates[-2:] == ["qwen36", "mistral4"]
    status = switch.collect_status(switch.load_registry())
    assert status["hot"] == "pair" and status["sets"] == {"pair": ["qwen36", "mistral4"]}
    switch.print_status(status)
    out = capsys.readouterr().out
    assert "set pair is hot: qwen36, mistral4" in out and "hot: set pair (mistral4, qwen36)" in out
    # Again: nothing changes. A single model: the set stops.
    assert switch_to(host, "pair") == 0 and "set pair (variant default) is already hot" in capsys.readouterr().out
    assert switch_to(host, "qwen") == 0 and host.hot() == ["qwen36"]


def test_a_set_whose_second_member_dies_while_loading_leaves_nothing_running(host):
    with_a_set(host)
    host.engines["mistral4"].dies_while_loading = True
    with pytest.raises(switch.SwitchError, match="sglang-mistral4.service exited while loading"):
        switch_to(host, "pair")
    assert host.hot() == [] and host.units["vllm-qwen36.service"].active == "inactive"
    assert switch.variant_in_use("qwen36") is None and switch.variant_in_use("mistral4") is None


def test_a_set_takes_no_variant_and_an_unknown_word_lists_the_sets(host):
    with_a_set(host)
    with pytest.raises(switch.SwitchError, match="pair is a set of models; its members start with their default"):
        switch_to(host, "pair", "rollback")
    with pytest.raises(switch.SwitchError, match=r"; sets: pair \(qwen36\+mistral4\)"):
        switch_to(host, "llama")


def test_a_wedged_model_is_restarted_within_its_bound_then_stopped_with_its_reason_and_last_logs(host, capsys, monkeypatch):
    import io

    host.registry["wedge"]["max_restarts_per_hour"] = 2
    host.rewrite_registry()
    switch_to(host, "qwen")
    capsys.readouterr()
    # The door finds qwen36 wedged twice: each time llm-switch restarts it, and it serves again.
    for attempt in (1, 2):
        monkeypatch.setattr("sys.stdin", io.StringIO("wedged qwen36\n1 request(s) in flight and no byte for 120 s\n"))
        assert switch.serve_request(switch.load_registry()) == 0
        captured = capsys.readouterr()
        answer = json.loads(captured.out.strip().splitlines()[-1])
        assert answer["ok"] and "restarted after a wedge" in answer["message"], answer
        assert f"restart {attempt} of 2 within the hour" in captured.out
        assert "qwen36 is wedged: 1 request(s) in flight" in captured.err  # the journal
        assert "engine: loading weights" in captured.err  # its last log lines, there too
        assert host.hot() == ["qwen36"]
        host.now += 60
    assert [c[:2] for c in host.commands].count(["systemctl", "restart"]) == 2
    # The third within the hour: stopped, not restarted, and the record says why.
    monkeypatch.setattr("sys.stdin", io.StringIO("wedged qwen36\nidle for 300 s; a canary got no token in 60 s\n"))
    assert switch.serve_request(switch.load_registry()) == 1
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not answer["ok"] and "wedged again after 2 restart(s) within the hour: stopped it" in answer["message"]
    assert host.hot() == []
    record = json.loads((host.root / "run" / "wedge.json").read_text())["qwen36"]
    assert record["state"] == "stopped" and record["wedges"] == 3 and len(record["restarts"]) == 2
    assert record["reason"].startswith("idle for 300 s") and "engine: loading weights" in record["last_logs"]
    # status shows it; an hour later the bound starts afresh.
    status = switch.collect_status(switch.load_registry())
    switch.print_status(status)
    assert "wedge: qwen36 stopped" in capsys.readouterr().out
    switch_to(host, "qwen")
    host.now += 3600
    monkeypatch.setattr("sys.stdin", io.StringIO("wedged qwen36\nagain\n"))
    assert switch.serve_request(switch.load_registry()) == 0


def test_a_wedge_report_for_a_stopped_model_or_an_unknown_word_changes_nothing(host, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("wedged qwen36\nstale report\n"))
    assert switch.serve_request(switch.load_registry()) == 1
    assert "not running" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("wedged qwen36 --variant x\n\x1b[2Jreason\n"))
    assert switch.serve_request(switch.load_registry()) == 1
    assert not [c for c in host.commands if c[:2] in (["systemctl", "restart"], ["systemctl", "start"])]


def test_the_compile_cache_is_cold_on_the_first_start_warm_after_and_old_images_are_pruned_past_the_bound(host, capsys):
    cache = host.root / "compile" / "qwen36"
    current = Path(host.model("qwen36")["compile_cache"])
    switch_to(host, "qwen")
    assert "its compile cache cold" in capsys.readouterr().out
    (current / "vllm").mkdir()
    (current / "vllm" / "graph.bin").write_bytes(b"x" * 1000)  # what the engine compiled
    switch_to(host, "mistral")
    switch_to(host, "qwen")
    assert "its compile cache warm" in capsys.readouterr().out
    starts = json.loads((host.root / "run" / "starts.json").read_text())
    assert starts["qwen36"]["compile_cache"] == "warm" and starts["qwen36"]["image_key"] == current.name
    # Two older images' caches, 600 and 700 bytes; the bound is 2000 bytes. Over it, the oldest goes first,
    # and the caches deployed images use are never pruned.
    for age, (key, size) in enumerate((("aaaaaaaaaaaaaaaa", 600), ("bbbbbbbbbbbbbbbb", 700))):
        (cache / key).mkdir()
        (cache / key / "blob").write_bytes(b"y" * size)
        os.utime(cache / key, (100 + age, 100 + age))
    host.registry["compile_cache_max_gb"] = 2000 / 1e9
    host.rewrite_registry()
    switch_to(host, "mistral")
    switch_to(host, "qwen")
    out = capsys.readouterr().out
    assert not (cache / "aaaaaaaaaaaaaaaa").exists() and (cache / "bbbbbbbbbbbbbbbb").exists(), out
    assert "pruned the compile cache" in out and (current / "vllm" / "graph.bin").exists()


def test_after_a_stop_an_engine_left_in_a_container_cgroup_is_killed_by_it_and_leaked_shm_files_go(host, capsys, monkeypatch):
    from sparkstack_host import memguard

    proc, cgroups, shm = host.root / "proc", host.root / "cgroup", host.root / "shm"
    scope = "/system.slice/docker-" + "a" * 64 + ".scope"

    def process(pid: int, comm: str, cgroup: str) -> None:
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
        (proc / str(pid) / "cgroup").write_text(f"0::{cgroup}\n")
        (proc / str(pid) / "maps").write_text("")

    switch_to(host, "qwen")
    capsys.readouterr()
    # A SIGKILLed API server left its EngineCore and a TP worker behind, in the container's cgroup.
    process(4242, "VLLM::EngineCor", scope)
    process(4243, "VLLM::Worker_TP", scope)
    # The owner runs vLLM by hand in their session, and a shell holds a shared-memory file open.
    process(5000, "VLLM::EngineCor", "/user.slice/user-1000.slice/session-3.scope")
    process(6000, "bash", "/user.slice/user-1000.slice/session-3.scope")
    (cgroups / scope.lstrip("/")).mkdir(parents=True)
    monkeypatch.setattr(memguard, "container_of", lambda pid: "a" * 12 if pid in (4242, 4243) else None)
    (shm / "psm_1a2b").write_bytes(b"x" * 8192)  # leaked by the killed engine
    (shm / "psm_3c4d").write_bytes(b"y" * 4096)  # held by the shell
    (shm / "psm_5e6f").write_bytes(b"z" * 4096)  # mapped by the owner's engine
    (shm / "other").write_bytes(b"w")  # not an engine's
    os.symlink(str(shm / "psm_3c4d"), proc / "6000" / "fd" / "3")
    (proc / "5000" / "maps").write_text(f"7f00-7f10 rw-s 00000000 00:1a 12 {shm}/psm_5e6f\n")

    switch.switch_none(switch.load_registry())
    out = capsys.readouterr().out
    # One kill for the container's whole cgroup, none by PID; the owner's own engine is named and left alone.
    assert (cgroups / scope.lstrip("/") / "cgroup.kill").read_text() == "1"
    assert f"VLLM::EngineCor (pid 4242) outlived its container's stop: killed its cgroup {scope}" in out
    assert "4243" not in out
    assert "VLLM::EngineCor (pid 5000) runs outside any container, so not the kit's: left running" in out
    assert sorted(p.name for p in shm.iterdir()) == ["other", "psm_3c4d", "psm_5e6f"]
    assert "removed 1 file(s) an engine left in" in out


def test_shared_memory_an_engine_left_resident_is_not_counted_as_room(host, capsys):
    # 40 GB of an engine's shared memory stayed resident after its stop; MemAvailable still counts it here.
    host.shmem_gb = 40.0
    host.write_meminfo()
    with pytest.raises(switch.SwitchError, match="not enough memory"):
        switch_to(host, "qwen")
    out = capsys.readouterr().out
    assert "refusing to start qwen36: 73.70 GB available < 67 GB for qwen36 + 8 GB reserve = 75 GB" in out, out
    assert "Shmem 40.00 GB" in out
    host.shmem_gb = 0.0  # removed (llm-switch clears an engine's leftovers in /dev/shm after a stop)
    assert switch_to(host, "qwen") == 0


def test_a_wedge_report_about_an_earlier_start_of_the_model_is_refused(host, capsys, monkeypatch):
    import io

    switch_to(host, "qwen")
    first = host.units["vllm-qwen36.service"].active_since
    host.now += 30
    switch.switch_none(switch.load_registry())
    switch_to(host, "qwen")  # started again while the door's report was on its way
    monkeypatch.setattr("sys.stdin", io.StringIO(f"wedged qwen36 {int(first * 1e6)}\nidle for 4 s\n"))
    assert switch.serve_request(switch.load_registry()) == 1
    assert "was started again since the wedge was seen" in capsys.readouterr().out
    assert not [c for c in host.commands if c[:2] in (["systemctl", "restart"], ["docker", "kill"])]
    now = host.units["vllm-qwen36.service"].active_since
    monkeypatch.setattr("sys.stdin", io.StringIO(f"wedged qwen36 {int(now * 1e6)}\nidle for 4 s\n"))
    assert switch.serve_request(switch.load_registry()) == 0


def test_an_engine_in_a_container_that_still_runs_is_not_a_leftover(host, capsys, monkeypatch):
    from sparkstack_host import memguard

    switch_to(host, "qwen")
    proc = host.root / "proc" / "7000"
    (proc / "fd").mkdir(parents=True)
    (proc / "comm").write_text("VLLM::EngineCor\n")
    (proc / "cgroup").write_text("0::/system.slice/docker-" + "b" * 64 + ".scope\n")
    (proc / "maps").write_text("")
    # The owner's own vLLM container, which runs on: docker lists it.
    monkeypatch.setattr(switch.leftovers, "running_container_ids", lambda run: {"b" * 12})
    monkeypatch.setattr(memguard, "container_of", lambda pid: "b" * 12)
    capsys.readouterr()
    switch.switch_none(switch.load_registry())
    assert not (host.root / "cgroup" / "system.slice").exists()
    assert "7000" not in capsys.readouterr().out
