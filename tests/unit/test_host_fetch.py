"""sparkstack-fetch against a fake Spark (tests/unit/fakehost.py): pulls and hub runs with bounded retries, the
secrets file only ever mounted, never passed. The real registry and hub are the hosts tier's
(tests/hosts/test_7_artifacts.py)."""

from __future__ import annotations

import json

import pytest

from sparkstack_host import fetch
from tests.unit.fakehost import FakeHost

REF = "127.0.0.1:5000/sparkstack/standin-engine@sha256:" + "d" * 64


@pytest.fixture
def host(tmp_path, monkeypatch) -> FakeHost:
    return FakeHost(tmp_path, monkeypatch)


def pulls(host: FakeHost) -> list[list[str]]:
    return [c for c in host.commands if c[:2] == ["docker", "pull"]]


def test_an_image_already_present_is_not_pulled_again(host, capsys):
    host.images.add(REF)
    assert fetch.cmd_image(REF) == 0
    assert pulls(host) == []
    assert f"{REF}: present" in capsys.readouterr().out


def test_a_pull_that_fails_twice_is_retried_and_then_succeeds(host, capsys):
    host.pulls_fail = 2
    assert fetch.cmd_image(REF) == 0
    out = capsys.readouterr().out
    assert len(pulls(host)) == 3
    assert "attempt 1/3 failed" in out and "attempt 2/3 failed" in out and "connection reset by peer" in out
    assert f"{REF}: pulled in" in out


def test_a_pull_that_keeps_failing_stops_after_three_attempts_with_what_to_do(host):
    host.pulls_fail = 5
    with pytest.raises(SystemExit, match="failed 3 times; check the host's network and registry access"):
        fetch.cmd_image(REF)
    assert len(pulls(host)) == 3


def test_resolve_image_prints_the_digest_docker_recorded(host, capsys):
    assert fetch.cmd_resolve_image(REF) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(fetch.HUB_MARK))
    answer = json.loads(line[len(fetch.HUB_MARK):])
    assert answer["platform"] == "linux/arm64" and answer["repo_digests"][0].endswith("d" * 64)
    assert answer["nccl"] == "none found"
    # The probe's run: offline, from the pulled image only, and its lines kept as the image gave them.
    probe = next(c for c in host.commands if c[:2] == ["docker", "run"])
    assert probe[2:9] == ["--rm", "--pull=never", "--network", "none", "--entrypoint", "sh", REF]
    host.image_files = "system libnccl.so.2\npip nvidia-nccl-cu12 X.Y\n"
    assert fetch.nccl_of(REF) == "pip nvidia-nccl-cu12 X.Y; system libnccl.so.2"


def test_a_snapshot_needs_its_image_on_the_host_first(host):
    spec = json.dumps({"repo": "Qwen/Qwen3.6", "revision": "main", "cache_dir": str(host.root / "cache")})
    with pytest.raises(SystemExit, match="is not on this host; it must be pulled first"):
        fetch.cmd_hub("fetch", REF, spec)


def test_the_hub_container_gets_the_hf_token_by_name_and_no_other_secret(host, capsys):
    host.images.add(REF)
    (host.root / "secrets.env").write_text("HF_TOKEN=hf_secret_value\nVLLM_API_KEY=sk-engine-key\n")
    spec = json.dumps({"repo": "Qwen/Qwen3.6", "revision": "main", "endpoint": "https://huggingface.co",
                       "cache_dir": str(host.root / "cache")})
    assert fetch.cmd_hub("resolve", REF, spec) == 0
    index, run = next((i, c) for i, c in enumerate(host.commands) if c[:2] == ["docker", "run"])
    assert run[run.index("HF_TOKEN") - 1] == "--env" and "secrets.env" not in " ".join(run)
    assert "--pull=never" in run and REF in run
    assert not any("hf_secret_value" in arg or "sk-engine-key" in arg for arg in run)
    # docker copies the named variable from its own environment, where the fetcher put it.
    environment = host.environments[index]
    assert environment["HF_TOKEN"] == "hf_secret_value" and "VLLM_API_KEY" not in environment
    assert "hf_secret_value" not in capsys.readouterr().out


def test_a_secrets_file_that_breaks_the_rule_stops_the_fetch_naming_the_line_not_the_value(host):
    host.images.add(REF)
    (host.root / "secrets.env").write_text('# the owner quoted it, as a shell would have it\nHF_TOKEN="hf_secret_value"\n')
    spec = json.dumps({"repo": "Qwen/Qwen3.6", "revision": "main", "cache_dir": str(host.root / "cache")})
    with pytest.raises(SystemExit) as stopped:
        fetch.cmd_hub("resolve", REF, spec)
    assert "secrets.env line 2: HF_TOKEN holds a space, a quote" in str(stopped.value)
    assert "hf_secret_value" not in str(stopped.value)
    assert not any(c[:2] == ["docker", "run"] for c in host.commands)


def test_a_hub_refusal_is_not_retried(host):
    host.images.add(REF)
    host.hub_exit = 3
    spec = json.dumps({"repo": "private/model", "revision": "main", "cache_dir": str(host.root / "cache")})
    with pytest.raises(SystemExit):
        fetch.cmd_hub("fetch", REF, spec)
    assert len([c for c in host.commands if c[:2] == ["docker", "run"]]) == 1


def test_a_hub_failure_is_retried_three_times_and_the_next_deploy_resumes(host):
    host.images.add(REF)
    host.hub_exit = 1
    spec = json.dumps({"repo": "Qwen/Qwen3.6", "revision": "main", "cache_dir": str(host.root / "cache")})
    with pytest.raises(SystemExit, match="failed 3 times; the next deploy resumes it"):
        fetch.cmd_hub("fetch", REF, spec)
    assert len([c for c in host.commands if c[:2] == ["docker", "run"]]) == 3
