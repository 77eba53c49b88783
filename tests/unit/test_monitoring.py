"""The monitoring the kit renders: a scrape configuration Prometheus accepts, and a dashboard whose every query
reads a series the door really serves."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sparkstack.groups import GroupSettings
from sparkstack.monitoring import dashboard, queried_series, scrape_config
from tests.unit.test_frontdoor_process import CHAT, ModelsSwitch, ask, door_in_front, two_models


def test_every_series_the_dashboard_queries_is_in_a_scrape_of_the_door(tmp_path):
    registry = two_models(tmp_path)
    (tmp_path / "guard.json").write_text(json.dumps({"floor_gb": 10, "last_action": None, "memory": {
        "total_gb": 119.7, "available_gb": 52.3, "at": time.time()}}))
    switch = ModelsSwitch(tmp_path / "switch.sock", registry)
    switch.start("qwen36")
    prelude = f"import sparkstack_host.contract as c\nc.GUARD_STATE = {str(tmp_path / 'guard.json')!r}"
    with door_in_front(switch, tmp_path, registry, prelude, ready=lambda code, body: '"hot": true' in body) as (port, _):
        # Traffic that makes each series appear: a stream, a request that waits for a switch, a refusal.
        assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True,
                                                          "stream_options": {"include_usage": True}})[0] == 200
        assert ask(port, "POST", "/v1/chat/completions", {**CHAT, "model": "mistral4"})[0] == 200
        code, body = ask(port, "GET", "/metrics")
    assert code == 200
    served = {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}
    queried = queried_series(dashboard("spark"))
    missing = [name for name in queried if name not in served]
    assert not missing, f"the dashboard queries series the door does not serve: {missing}"
    assert "vllm:generation_tokens_total" in queried and "sparkstack_door_switches_total" in queried


def test_the_scrape_configuration_has_a_job_per_host_with_its_own_key_file_and_prometheus_accepts_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKSTACK_KEYS_DIR", str(tmp_path / "keys"))
    settings = GroupSettings(frontdoor_expose=True, frontdoor_tls=True, frontdoor_clients=["prometheus"])
    text = scrape_config("spark", {"spark-1": {"ssh_hostname": "10.0.0.5"}, "spark-2": {}}, settings, "door.crt")
    config = yaml.safe_load(text)
    first, second = config["scrape_configs"]
    assert first["static_configs"] == [{"targets": ["10.0.0.5:30080"], "labels": {"host": "spark-1", "group": "spark"}}]
    assert first["scheme"] == "https" and first["tls_config"] == {"ca_file": "door.crt"}
    assert first["authorization"]["credentials_file"].endswith("keys/spark-1/prometheus.key")
    assert second["authorization"]["credentials_file"].endswith("keys/spark-2/prometheus.key")
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus")
    (tmp_path / "prometheus.yml").write_text(text)
    checked = subprocess.run(["promtool", "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
