"""What a monitoring stack needs for a group: a Prometheus scrape configuration and a Grafana dashboard.

`sparkstack monitoring --group G --out DIR` writes both. Prometheus scrapes each host's door (/metrics: the door's
series and the hot engines' own, sparkstack_host/door_metrics.py), one job per host, since each door has its own key:
the client key named PROMETHEUS_CLIENT (list it in sparkstack_frontdoor_clients; its key stays on this machine and
the configuration names its file, never the key). A door with TLS is scraped over https, trusting the certificate
given (the door's own, /etc/sparkstack/tls/door.crt, copied here). The dashboard queries only series the door
serves (tests/unit/test_monitoring.py checks each one against a real scrape).
"""

from __future__ import annotations

import json
import re

import yaml

from sparkstack.client_keys import key_path
from sparkstack.groups import GroupSettings

PROMETHEUS_CLIENT = "prometheus"
SCRAPE_INTERVAL = "15s"
# Series the door serves (door_metrics.py) and vLLM's own (labelled sparkstack_model by the door).
PANELS = [
    ("Requests per second by model and status",
     'sum by (model, status) (rate(sparkstack_door_requests_total{host="$host"}[5m]))', "reqps"),
    ("Time to first byte, median (streams: time to first token)",
     'histogram_quantile(0.5, sum by (le, model) (rate(sparkstack_door_time_to_first_byte_seconds_bucket{host="$host"}[5m])))',
     "s"),
    ("Request duration, 95th percentile",
     'histogram_quantile(0.95, sum by (le, model) (rate(sparkstack_door_request_duration_seconds_bucket{host="$host"}[5m])))',
     "s"),
    ("Completion tokens per second by client",
     'sum by (client) (rate(sparkstack_door_completion_tokens_total{host="$host"}[5m]))', "short"),
    ("Prompt tokens per second by client",
     'sum by (client) (rate(sparkstack_door_prompt_tokens_total{host="$host"}[5m]))', "short"),
    ("Engine decode rate (vLLM's own counter)",
     'sum by (sparkstack_model) (rate(vllm:generation_tokens_total{host="$host"}[5m]))', "short"),
    ("Requests waiting for a model to load", 'sparkstack_door_queue_depth{host="$host"}', "short"),
    ("Queue wait, 95th percentile",
     'histogram_quantile(0.95, sum by (le) (rate(sparkstack_door_queue_wait_seconds_bucket{host="$host"}[15m])))', "s"),
    ("Switches by outcome (1 h)", 'sum by (target, outcome) (increase(sparkstack_door_switches_total{host="$host"}[1h]))',
     "short"),
    ("Hot model", 'sparkstack_door_model_hot{host="$host"} == 1', "short"),
    ("Memory available and the guard's floor",
     'sparkstack_host_memory_available_bytes{host="$host"} or sparkstack_memory_guard_floor_bytes{host="$host"}', "bytes"),
    ("On-demand backoff (s; -1: gave up)", 'sparkstack_door_on_demand_backoff_seconds{host="$host"}', "s"),
]


def scrape_config(group: str, hosts: dict[str, dict], settings: GroupSettings, ca_file: str | None = None) -> str:
    """prometheus.yml for the group's hosts (inventory name -> inventory data, with ssh_hostname)."""
    jobs = []
    for name, data in hosts.items():
        address = data.get("ssh_hostname") or name
        job = {
            "job_name": f"sparkstack-{name}",
            "metrics_path": "/metrics",
            "scheme": "https" if settings.frontdoor_tls else "http",
            "static_configs": [{"targets": [f"{address}:{settings.frontdoor_port}"], "labels": {"host": name, "group": group}}],
        }
        if settings.frontdoor_monitoring == "key":
            job["authorization"] = {"type": "Bearer", "credentials_file": str(key_path(name, PROMETHEUS_CLIENT))}
        if settings.frontdoor_tls:
            job["tls_config"] = {"ca_file": ca_file or "door.crt"}
        jobs.append(job)
    notes = [f"# Scrapes the sparkstack front door of each host in group {group!r} (sparkstack monitoring)."]
    if settings.frontdoor_monitoring == "key" and PROMETHEUS_CLIENT not in settings.frontdoor_clients:
        notes.append(f"# The doors need a key: add {PROMETHEUS_CLIENT!r} to sparkstack_frontdoor_clients and deploy; the "
                     "deploy makes the key file named below.")
    if not settings.frontdoor_expose and settings.frontdoor_monitoring == "key":
        notes.append("# The group's doors listen on loopback only: run Prometheus on the Spark, or reach the door "
                     "through `ssh -L`, and point the target there.")
    document = {"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": jobs}
    return "\n".join(notes) + "\n" + yaml.safe_dump(document, sort_keys=False)


def dashboard(group: str) -> str:
    """A Grafana dashboard (JSON model) with a host variable and one panel per PANELS entry."""
    panels = []
    for number, (title, expr, unit) in enumerate(PANELS):
        panels.append({
            "id": number + 1, "type": "timeseries", "title": title,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (number % 2), "y": 8 * (number // 2)},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": expr, "datasource": {"type": "prometheus", "uid": "${datasource}"}}],
        })
    model = {
        "title": f"sparkstack: {group}",
        "uid": f"sparkstack-{group}",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "host", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(sparkstack_door_model_hot, host)", "refresh": 2},
        ]},
        "panels": panels,
    }
    return json.dumps(model, indent=2) + "\n"


SERIES = re.compile(r"\b(sparkstack_[a-z0-9_]+|vllm:[a-z0-9_:]+)")
# What in a query is a label, not a series: `by (...)`, `without (...)` and `{...}` matchers.
LABELS = re.compile(r"\b(?:by|without)\s*\([^)]*\)|\{[^}]*\}")


def queried_series(dashboard_json: str) -> set[str]:
    """Every series name the dashboard's queries read."""
    found = set()
    for panel in json.loads(dashboard_json)["panels"]:
        for target in panel["targets"]:
            found.update(SERIES.findall(LABELS.sub("", target["expr"])))
    for variable in json.loads(dashboard_json)["templating"]["list"]:
        found.update(SERIES.findall(LABELS.sub("", str(variable.get("query", "")))))
    return found
