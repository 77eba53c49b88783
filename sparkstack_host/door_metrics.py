"""The front door's metrics, in Prometheus's text exposition, and the engines' own beside them.

Built on prometheus_client (the distribution's python3-prometheus-client, beside python3-aiohttp). One scrape of
the door's /metrics gets:
  sparkstack_door_requests_total{model,client,route,status}     each request the door answered
  sparkstack_door_request_duration_seconds{model,route}         histogram, to the last byte
  sparkstack_door_time_to_first_byte_seconds{model,route}       histogram: the engine's first byte (TTFT for a stream)
  sparkstack_door_prompt_tokens_total, _completion_tokens_total{model,client}   as the engine reported them
  sparkstack_door_queue_depth, sparkstack_door_queue_wait_seconds{model}        requests held while a model loads
  sparkstack_door_switches_total{target,outcome}, sparkstack_door_switch_duration_seconds{outcome}
  sparkstack_door_on_demand_failed_tries{target}, sparkstack_door_on_demand_backoff_seconds{target}
  sparkstack_door_model_state{model,state} (1 for its state), sparkstack_door_model_hot{model}, _in_flight{model}
  sparkstack_host_memory_total_bytes, _available_bytes      /proc/meminfo as the memory guard reads it (on a GB10
                                                            the GPU exporters see nothing)
  sparkstack_memory_guard_floor_bytes, sparkstack_memory_guard_last_action_timestamp_seconds{model}
  sparkstack_wedge_canaries_total{model,outcome}           the wedge watch's canaries: token or none
  sparkstack_wedge_restarts_last_hour{model}, sparkstack_wedge_stopped{model}, sparkstack_wedge_last_timestamp_seconds{model}
                                                            llm-switch's record of wedges (sparkstack_host/wedgewatch.py)
and every hot engine's own series (vLLM's vllm:*), each sample labelled sparkstack_model="NAME".
"""

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from sparkstack_host import contract

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ENGINE_LABEL = "sparkstack_model"
STATES = ("hot", "loading", "stopped", "failed")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
FIRST_BYTE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SWITCH_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900)
GIB = 1024 ** 3
GUARD_FRESH_S = 10


def guard_memory(guard):
    """(total, available) in bytes as the memory guard last read /proc/meminfo, or None when it has not reported
    within GUARD_FRESH_S (it reads every second; a guard that stopped is not reporting)."""
    memory = guard.get("memory")
    if not isinstance(memory, dict) or time.time() - float(memory.get("at") or 0) > GUARD_FRESH_S:
        return None
    return memory["total_gb"] * GIB, memory["available_gb"] * GIB


class DoorState:
    """The door's state at scrape time, read from the door itself, the kernel and the guard's state file."""

    def __init__(self, door):
        self.door = door

    def collect(self):
        door = self.door
        state = GaugeMetricFamily("sparkstack_door_model_state", "1 for the state the door last saw each model in",
                                  labels=["model", "state"])
        hot = GaugeMetricFamily("sparkstack_door_model_hot", "1 while the model is hot", labels=["model"])
        in_flight = GaugeMetricFamily("sparkstack_door_in_flight", "requests forwarded to the model's engine now",
                                      labels=["model"])
        for name, seen in door.states.items():
            for each in STATES:
                state.add_metric([name, each], 1.0 if seen == each else 0.0)
            hot.add_metric([name], 1.0 if seen == "hot" else 0.0)
            in_flight.add_metric([name], float(door.in_flight[name]))
        yield from (state, hot, in_flight)
        yield GaugeMetricFamily("sparkstack_door_queue_depth", "requests held while their model loads",
                                value=float(door.waiting))
        tries = GaugeMetricFamily("sparkstack_door_on_demand_failed_tries",
                                  "failed on-demand tries since the model (or set) was last hot", labels=["target"])
        backoff = GaugeMetricFamily("sparkstack_door_on_demand_backoff_seconds",
                                    "seconds before the door tries again (0: it may; -1: it gave up)", labels=["target"])
        for target in [*door.models, *door.sets]:
            count, failed_at, _ = door.failures.get(target, (0, 0.0, ""))
            tries.add_metric([target], float(count))
            backoff.add_metric([target], door.backoff_left(target, count, failed_at) if count else 0.0)
        yield from (tries, backoff)
        guard = read_guard_state()
        memory = guard_memory(guard)
        if memory is not None:
            total, available = memory
            yield GaugeMetricFamily("sparkstack_host_memory_total_bytes", "MemTotal, as the memory guard last read it",
                                    value=float(total))
            yield GaugeMetricFamily("sparkstack_host_memory_available_bytes",
                                    "MemAvailable, as the memory guard last read it (every second)", value=float(available))
        if guard.get("floor_gb") is not None:
            yield GaugeMetricFamily("sparkstack_memory_guard_floor_bytes",
                                    "the memory guard stops the hot model below this MemAvailable",
                                    value=float(guard["floor_gb"]) * GIB)
        action = guard.get("last_action")
        last = GaugeMetricFamily("sparkstack_memory_guard_last_action_timestamp_seconds",
                                 "when the memory guard last stopped a model", labels=["model"])
        if isinstance(action, dict) and action.get("time"):
            last.add_metric([str(action.get("model"))], float(action["time"]))
        yield last
        restarts = GaugeMetricFamily("sparkstack_wedge_restarts_last_hour",
                                     "restarts of a wedged model by llm-switch within the last hour", labels=["model"])
        stopped = GaugeMetricFamily("sparkstack_wedge_stopped",
                                    "1 when llm-switch stopped the model for wedging too often", labels=["model"])
        when = GaugeMetricFamily("sparkstack_wedge_last_timestamp_seconds", "when the model last wedged",
                                 labels=["model"])
        for name, record in door.wedges().items():
            restarts.add_metric([name], float(record["restarts_last_hour"]))
            stopped.add_metric([name], 1.0 if record.get("state") == "stopped" else 0.0)
            when.add_metric([name], float(record.get("at") or 0))
        yield from (restarts, stopped, when)


def read_guard_state():
    return contract.read_state(contract.GUARD_STATE)


class DoorMetrics:
    def __init__(self, door):
        registry = self.registry = CollectorRegistry()
        self.requests = Counter("sparkstack_door_requests", "requests the door answered",
                                ["model", "client", "route", "status"], registry=registry)
        self.duration = Histogram("sparkstack_door_request_duration_seconds", "from the request to its last byte",
                                  ["model", "route"], buckets=DURATION_BUCKETS, registry=registry)
        self.first_byte = Histogram("sparkstack_door_time_to_first_byte_seconds",
                                    "from the request to the engine's first byte (a stream's time to first token)",
                                    ["model", "route"], buckets=FIRST_BYTE_BUCKETS, registry=registry)
        self.prompt_tokens = Counter("sparkstack_door_prompt_tokens", "prompt tokens, as the engine reported them",
                                     ["model", "client"], registry=registry)
        self.completion_tokens = Counter("sparkstack_door_completion_tokens",
                                         "completion tokens, as the engine reported them", ["model", "client"],
                                         registry=registry)
        self.queue_wait = Histogram("sparkstack_door_queue_wait_seconds", "how long a request waited for its model to load",
                                    ["model"], buckets=SWITCH_BUCKETS, registry=registry)
        self.switches = Counter("sparkstack_door_switches", "switches the door asked for (on demand, /unload, idle TTL)",
                                ["target", "outcome"], registry=registry)
        self.switch_duration = Histogram("sparkstack_door_switch_duration_seconds", "a switch, drain included",
                                         ["outcome"], buckets=SWITCH_BUCKETS, registry=registry)
        self.canaries = Counter("sparkstack_wedge_canaries", "the wedge watch's canaries, by outcome (token, none)",
                                ["model", "outcome"], registry=registry)
        registry.register(DoorState(door))

    def record(self, request, client, route, status, seconds):
        """One answered request: its count, duration, first byte and tokens."""
        model = request.get("model", "-")
        self.requests.labels(model, client, route, str(status)).inc()
        self.duration.labels(model, route).observe(seconds)
        if request.get("first_byte_s") is not None:
            self.first_byte.labels(model, route).observe(request["first_byte_s"])
        prompt, completion = request.get("tokens", (0, 0))
        if prompt or completion:
            self.prompt_tokens.labels(model, client).inc(prompt)
            self.completion_tokens.labels(model, client).inc(completion)
        if request.get("queued_s") is not None:
            self.queue_wait.labels(model).observe(request["queued_s"])

    def canary(self, model, outcome):
        self.canaries.labels(model, outcome).inc()

    def switched(self, target, outcome, seconds):
        self.switches.labels(target, outcome).inc()
        self.switch_duration.labels(outcome).observe(seconds)

    def exposition(self, engines):
        """The door's series, then the engines' (name -> their /metrics text), each sample labelled with its model."""
        merged = {}
        for name, text in engines.items():
            try:
                families = list(text_string_to_metric_families(text))
            except (ValueError, TypeError, IndexError):
                continue  # an engine's page the parser cannot read is left out, not a broken scrape
            for family in families:
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
                for sample in family.samples:
                    into.add_sample(sample.name, {ENGINE_LABEL: name, **sample.labels}, sample.value, sample.timestamp)
        door = generate_latest(self.registry)
        if not merged:
            return door
        engines_registry = CollectorRegistry()
        engines_registry.register(_Fixed(list(merged.values())))
        return door + generate_latest(engines_registry)


class _Fixed:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families
