"""The engine's own counters (its Prometheus `/metrics`), read before and after verify's runs.

verify times tokens from outside: its TTFT includes HTTP, the chat template and tokenization, and its decode
clock reads chunk arrivals. vLLM counts the same requests inside the engine. Read around verify's runs, the
engine's counters give the figures to put beside verify's own:
  * decode tok/s = (generated tokens - one first token per request) / decode time, summed;
  * TTFT = the time-to-first-token histogram's sum / count.
Names are vLLM's (tests/contracts/vllm-*/plain.json lists the families a real vLLM serves). Requests from
other clients during verify's runs count too: verify reports the difference, and past the bound below the
decode reading is INSTRUMENT (one of the two clocks is wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

GENERATED = "vllm:generation_tokens"
DECODE_TIME = "vllm:request_decode_time_seconds"
TTFT = "vllm:time_to_first_token_seconds"
# verify's decode figure and the engine's may differ by this share before the reading is INSTRUMENT: the
# real run agreed within 0.6% (../shared/REAL-ENGINE.md); chunk timing and other traffic explain a few %.
DECODE_BOUND = 0.10
# Below this much decoding (seconds, all runs together) the two clocks are not compared: a chunk's scheduling
# jitter alone is several % of a tenth of a second. verify's default runs (3 x 128 tokens) decode for seconds.
MIN_COMPARED_DECODE_S = 1.0


@dataclass(frozen=True)
class Counters:
    generated: float
    decode_sum: float
    decode_count: float
    ttft_sum: float
    ttft_count: float


def parse(text: str) -> Counters | None:
    """The counters summed over every label set, or None when the exposition has no vLLM decode counters."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    except ValueError:
        return None
    wanted = {"generated": f"{GENERATED}_total", "decode_sum": f"{DECODE_TIME}_sum", "decode_count": f"{DECODE_TIME}_count",
              "ttft_sum": f"{TTFT}_sum", "ttft_count": f"{TTFT}_count"}
    if any(name not in values for name in wanted.values()):
        return None
    return Counters(**{key: values[name] for key, name in wanted.items()})


@dataclass(frozen=True)
class EngineFigures:
    requests: int
    decode_tok_s: float | None
    ttft_s: float | None
    decode_s: float = 0.0  # the engine's decode time over the requests, summed

    @property
    def comparable(self) -> bool:
        return self.decode_s >= MIN_COMPARED_DECODE_S


def between(before: Counters, after: Counters) -> EngineFigures | None:
    requests = after.decode_count - before.decode_count
    if requests < 1:
        return None
    decode_s = after.decode_sum - before.decode_sum
    after_first = after.generated - before.generated - requests
    ttft_n = after.ttft_count - before.ttft_count
    return EngineFigures(int(requests), after_first / decode_s if decode_s > 0 and after_first > 0 else None,
                         (after.ttft_sum - before.ttft_sum) / ttft_n if ttft_n > 0 else None, decode_s)
