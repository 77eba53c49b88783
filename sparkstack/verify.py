"""Measure a served model directly over its OpenAI-compatible API, with an instrument that cannot lie quietly.

Every check ends PASS, FAIL (the model or server answered wrongly) or INSTRUMENT
(no request reached the model, or the reading is impossible): the seeds' 0/30 came
from a harness that never reached the model, so "nothing measured" is never a score.
"""

from __future__ import annotations

import base64
import json
import re
import statistics
import struct
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from sparkstack import engine_metrics

PASS, FAIL, INSTRUMENT = "PASS", "FAIL", "INSTRUMENT"
CONNECT_TIMEOUT_S = 3.05
# No single Spark stream decodes anywhere near this; a higher figure means the clock or the count is wrong.
MAX_PLAUSIBLE_TOK_S = 1000.0
DETERMINISTIC_PROMPT = "What is 12*17? Answer with the number only."
DETERMINISTIC_ANSWER = 204
# Thinking off for the fixed answer (Qwen3's template reads enable_thinking; others ignore it), and a
# budget an answer of one number cannot exhaust; finish_reason "length" is still an instrument failure.
DETERMINISTIC_MAX_TOKENS = 256
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
# Fallback bound on tokens per chunk when speculative decoding is on but its draft length is not declared.
SPECULATIVE_CEILING = 16
# A stream must end with one of these; anything else (abort, error, none) means the run was cut short.
COMPLETE_FINISH_REASONS = ("stop", "length")
# A number as written: digits with thousands commas and an optional decimal part ("1,204", "204.5").
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
# Tokens an engine generates but never streams: the reasoning and tool parsers swallow their markers
# (`<think>`, `</think>`, tool-call tags), so a chunk after one may carry that many more by the count.
SWALLOWED_TOKENS = 2
THROUGHPUT_PROMPT = "Count upwards from one, writing each number as an English word, separated by spaces."
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def tiny_png() -> str:
    """A 4x4 red PNG as a data URI, built here so the probe needs no file or network."""
    width = height = 4
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


@dataclass
class Expectations:
    """What the deployed profile says the model should do."""
    served_model_name: str
    vision: bool | None = None
    tools: bool = False
    expected_decode_tok_s: float | None = None
    profile: str | None = None
    variant: str | None = None
    image: str | None = None
    engine: str | None = None
    engine_version: str | None = None      # the release range the profile declares
    moe_backend: str | None = None         # the MoE backend the profile pins
    command: list[str] | None = None       # the running container's command line, when the host was asked
    # Most tokens one streamed chunk may carry: 1 without speculative decoding, k+1 with k draft tokens,
    # None when the variant's speculative settings do not say (a count check then allows SPECULATIVE_CEILING).
    tokens_per_chunk_max: int | None = 1
    # Why no decode baseline applies (e.g. the running variant is not known), shown instead of a judgement.
    baseline_note: str | None = None
    # How the running engine last started (llm-switch status): its compile cache cold or warm, and the time to ready.
    start: dict | None = None


@dataclass
class Check:
    name: str
    status: str
    figure: str = "-"
    detail: str = ""


@dataclass
class Report:
    url: str
    expectations: Expectations
    checks: list[Check] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        statuses = {c.status for c in self.checks}
        if INSTRUMENT in statuses:
            return 2
        return 1 if FAIL in statuses else 0

    def table(self) -> str:
        e = self.expectations
        head = (f"verify {self.url}: model {e.served_model_name}"
                + (f" (profile {e.profile}, variant {e.variant})" if e.profile else ""))
        if e.start and e.start.get("compile_cache"):
            head += (f"\nlast start: {e.start['compile_cache']} (compile cache {e.start.get('image_key')}), "
                     f"ready after {e.start.get('ready_s')} s")
        rows = [f"{'CHECK':<14}{'RESULT':<12}{'FIGURE':<16}DETAIL"]
        rows += [f"{c.name:<14}{c.status:<12}{c.figure:<16}{c.detail}" for c in self.checks]
        verdict = {0: "all checks passed", 1: "a check FAILED", 2: "INSTRUMENT: a reading could not be trusted or nothing reached the model (see above)"}[self.exit_code]
        return "\n".join([head, *rows, verdict])

    def as_json(self) -> dict:
        return {"url": self.url, "expectations": asdict(self.expectations), "exit_code": self.exit_code,
                "checks": [asdict(c) for c in self.checks], "figures": self.figures}


class Instrument(Exception):
    """The request never reached the model, or the reading cannot be trusted."""


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, read_timeout_s: float = 60.0):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.timeout = (CONNECT_TIMEOUT_S, read_timeout_s)
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:  # includes ConnectTimeout
            raise Instrument(f"{path}: could not connect ({_short(exc)})") from None
        except requests.Timeout:  # a ReadTimeout: connected, but not a byte came back
            raise Instrument(f"{path}: timed out after {self.timeout[1]:g} s before any byte") from None
        except requests.RequestException as exc:  # anything else on the wire: not a reading
            raise Instrument(f"{path}: transport error ({type(exc).__name__}: {_short(exc)})") from None


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Connection reset"):
        if marker in text:
            return marker
    return text[:120]


def chat(client: Client, model: str, content, **extra) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}
    return client.request("POST", "/v1/chat/completions", json=body)


def whole_numbers(text: str) -> list[int | None]:
    """Each number in the text as written: an int, or None for one that is not whole ("204.5")."""
    numbers: list[int | None] = []
    for raw in NUMBER.findall(text):
        raw = raw.rstrip(",")
        numbers.append(None if "." in raw else int(raw.replace(",", "")))
    return numbers


# --- checks -------------------------------------------------------------

def _pep440(version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        Version(str(version))
    except InvalidVersion:
        return False
    return True


def check_engine(client: Client, e: Expectations) -> Check:
    """Which engine release answers, and whether the MoE guard is in force. INFO when it cannot be told."""
    from sparkstack.engines import ADAPTERS
    from sparkstack.engines.release import admits

    adapter = ADAPTERS.get(e.engine or "")
    if adapter is None:
        return Check("engine", "INFO", "-", "engine unknown (no profile matched); not checked")
    version = None
    try:
        response = client.request("GET", adapter.version_path)
        if response.status_code == 200:
            version = response.json().get("version")
    except (Instrument, ValueError):
        pass
    notes, status = [], PASS
    if version is None:
        status = "INFO"
        notes.append(f"{adapter.version_path} gave no version")
    elif not _pep440(version):
        status = "INFO"
        notes.append(f"the server reports version {version!r}, not a PEP 440 version; not judged")
    elif e.engine_version and not admits(e.engine_version, version):
        status = FAIL
        notes.append(f"the profile declares {e.engine_version!r}")
    if e.moe_backend:
        running = adapter.moe_backend_in(e.command) if e.command is not None else None
        if e.command is None:
            notes.append(f"MoE guard: expected {adapter.moe_backend_flag} {e.moe_backend}; "
                         "not observable over HTTP (verify --host reads the container's command line)")
        elif running == e.moe_backend:
            notes.append(f"MoE guard in force: {adapter.moe_backend_flag} {running}")
        else:
            status = FAIL
            notes.append(f"MoE guard NOT in force: the running command line has "
                         f"{f'{adapter.moe_backend_flag} {running}' if running else f'no {adapter.moe_backend_flag}'}, "
                         f"the profile pins {e.moe_backend}")
    elif e.engine:
        notes.append("no MoE backend pinned by the profile")
    figure = f"{adapter.name} {version}" if version else adapter.name
    return Check("engine", status, figure, "; ".join(notes))


def check_readiness(client: Client, e: Expectations) -> Check:
    health = client.request("GET", "/health")
    if health.status_code != 200:
        return Check("readiness", FAIL, f"HTTP {health.status_code}", "/health is not 200: the server is up but not ready")
    models = client.request("GET", "/v1/models")
    if models.status_code != 200:
        return Check("readiness", FAIL, f"HTTP {models.status_code}", "/v1/models did not answer 200")
    try:
        served = [m.get("id") for m in models.json().get("data", [])]
    except (ValueError, AttributeError):
        raise Instrument("/v1/models: 200 OK but not the JSON model list; cannot tell what is served") from None
    if e.served_model_name not in served:
        return Check("readiness", FAIL, "-", f"/v1/models lists {served}, not {e.served_model_name!r}")
    return Check("readiness", PASS, "ready", f"/health 200; /v1/models lists {e.served_model_name!r}")


def check_deterministic(client: Client, e: Expectations) -> Check:
    """12*17 at temperature 0, thinking off; the answer alone is scored, as a whole number."""
    response = chat(client, e.served_model_name, DETERMINISTIC_PROMPT, max_tokens=DETERMINISTIC_MAX_TOKENS, **NO_THINKING)
    if response.status_code != 200:
        return Check("deterministic", FAIL, f"HTTP {response.status_code}", response.text[:120])
    try:
        choice = (response.json().get("choices") or [{}])[0]
    except ValueError:
        raise Instrument("deterministic: the answer is not JSON; nothing to score") from None
    message = choice.get("message") or {}
    answer = message.get("content") or ""
    if choice.get("finish_reason") == "length":
        raise Instrument(f"deterministic: the {DETERMINISTIC_MAX_TOKENS}-token budget ran out before the answer "
                         "ended (finish_reason length); a cut-off answer is not a score")
    if not answer.strip():
        thought = message.get("reasoning") or message.get("reasoning_content")
        raise Instrument("deterministic: no answer to score" + (" (only thinking came back)" if thought else
                                                                 "; 200 OK with no tokens"))
    numbers = whole_numbers(answer)
    ok = bool(numbers) and numbers[-1] == DETERMINISTIC_ANSWER
    figure = str(numbers[-1]) if numbers and numbers[-1] is not None else repr(answer[:20])
    said = "answered 204" if ok else f"answered {answer.strip()[:40]!r}, not 204"
    return Check("deterministic", PASS if ok else FAIL, figure, f"12*17 at temperature 0, thinking off: {said}")


@dataclass
class StreamRun:
    tokens: int                 # generated tokens, thinking included
    thinking_tokens: int
    chunks: int                 # chunks that carried generated text or tool calls
    first_chunk_tokens: int     # tokens in the first timed chunk (before the decode interval starts)
    ttft_s: float
    decode_s: float
    reads: int
    method: str
    finish_reason: str
    max_chunk_tokens: int | None

    @property
    def tok_s(self) -> float | None:
        after_first = self.tokens - self.first_chunk_tokens
        if after_first < 1 or self.decode_s <= 0:
            return None
        return after_first / self.decode_s


# Delta fields that carry generated text: vLLM 0.33 streams thinking as `reasoning`, SGLang 0.5 as
# `reasoning_content`; tool-call deltas count as generated too.
GENERATED_FIELDS = ("content", "reasoning", "reasoning_content")
THINKING_FIELDS = ("reasoning", "reasoning_content")


class _Stream:
    """What one SSE stream carried, read event by event."""

    def __init__(self) -> None:
        self.chunks = self.thinking_chunks = 0
        self.first: float | None = None
        self.last: float | None = None
        self.usage_total: int | None = None
        self.per_chunk: list[tuple[int, bool]] = []   # (tokens in the chunk, thinking), from per-chunk usage
        self.finish: str | None = None
        self.done = False

    def read(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(payload)
        except ValueError:
            raise Instrument(f"stream: unreadable event {payload[:60]!r}; the count cannot be trusted") from None
        if "error" in event or event.get("object") == "error":
            error = event["error"] if isinstance(event.get("error"), dict) else event
            raise Instrument(f"stream: the engine sent an error event after {self.chunks} chunks "
                             f"({str(error.get('message'))[:100]}); the run is not a measurement")
        usage = (event.get("usage") or {}).get("completion_tokens")
        generated = thinking = False
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if any(delta.get(f) for f in GENERATED_FIELDS) or delta.get("tool_calls"):
                generated = True
                thinking = thinking or any(delta.get(f) for f in THINKING_FIELDS)
            self.finish = choice.get("finish_reason") or self.finish
        if generated:
            now = time.perf_counter()
            self.first = self.first if self.first is not None else now
            self.last = now
            self.chunks += 1
            self.thinking_chunks += thinking
            if usage is not None:
                self.per_chunk.append((usage - (self.usage_total or 0), thinking))
        if usage is not None:
            self.usage_total = usage


def stream_once(client: Client, e: Expectations, max_tokens: int) -> StreamRun:
    """One streamed completion, timed from the first generated chunk of any kind (thinking, answer or tool
    call) to the last, counted by the engine's per-chunk usage when it gives it. Anything short of a
    complete run (an error event, no finish_reason, no [DONE], a dropped connection) is Instrument."""
    body = {"model": e.served_model_name, "messages": [{"role": "user", "content": THROUGHPUT_PROMPT}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    started = time.perf_counter()
    response = client.request("POST", "/v1/chat/completions", json=body, stream=True)
    if response.status_code >= 500:
        raise Instrument(f"stream: HTTP {response.status_code}; no tokens to time")
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:120]}")
    stream, reads, buffer = _Stream(), 0, b""
    try:
        for data in response.iter_content(chunk_size=None):
            reads += 1
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                line = line.strip()
                if line.startswith(b"data:"):
                    stream.read(line[5:].strip())
    except requests.RequestException as exc:  # ChunkedEncodingError, ConnectionError, ReadTimeout mid-stream
        raise Instrument(f"stream: broke off after {stream.chunks} chunks ({type(exc).__name__}: {_short(exc)})") from None
    if not stream.chunks:
        raise Instrument("stream: 200 OK with no tokens; the model produced nothing measurable")
    if not stream.done:
        raise Instrument(f"stream: ended after {stream.chunks} chunks without the [DONE] end marker; the run is incomplete")
    if stream.finish not in COMPLETE_FINISH_REASONS:
        raise Instrument(f"stream: finish_reason {stream.finish!r} after {stream.chunks} chunks; a complete run ends with "
                         f"{' or '.join(COMPLETE_FINISH_REASONS)}")
    ttft, decode = stream.first - started, stream.last - stream.first
    if stream.usage_total is None:
        return StreamRun(stream.chunks, stream.thinking_chunks, stream.chunks, 1, ttft, decode, reads,
                         "chunks (the engine gave no usage; 1 chunk counted as 1 token)", stream.finish, None)
    exact = len(stream.per_chunk) == stream.chunks
    run = StreamRun(
        tokens=stream.usage_total,
        thinking_tokens=sum(n for n, t in stream.per_chunk if t) if exact else stream.thinking_chunks,
        chunks=stream.chunks,
        first_chunk_tokens=max(stream.per_chunk[0][0], 1) if exact else 1,
        ttft_s=ttft, decode_s=decode, reads=reads,
        method="usage per chunk" if exact else "usage.completion_tokens",
        finish_reason=stream.finish,
        max_chunk_tokens=max(n for n, _ in stream.per_chunk) if exact else None)
    check_count(run, e)
    return run


def check_count(run: StreamRun, e: Expectations) -> None:
    """The engine's token count must agree with what was streamed and timed, within what speculative
    decoding explains (up to k+1 tokens a chunk); anything else is a broken instrument, never a rate."""
    ceiling = (e.tokens_per_chunk_max or SPECULATIVE_CEILING) + SWALLOWED_TOKENS
    if run.tokens < run.chunks:
        raise Instrument(f"stream: usage counts {run.tokens} tokens but {run.chunks} chunks carried text; the count is wrong")
    if run.max_chunk_tokens is not None and run.max_chunk_tokens > ceiling:
        raise Instrument(f"stream: one chunk carried {run.max_chunk_tokens} tokens by the engine's count, more than the "
                         f"{ceiling} that speculative decoding and parser markers explain; tokens were counted that were not streamed")
    if run.tokens > run.chunks * ceiling:
        raise Instrument(f"stream: usage counts {run.tokens} tokens for {run.chunks} timed chunks, more than "
                         f"{ceiling} a chunk, which speculative decoding cannot explain; tokens were counted that were not timed")


def engine_counters(client: Client) -> engine_metrics.Counters | None:
    """The engine's own counters, where it serves them (vLLM's /metrics); None elsewhere."""
    try:
        response = client.request("GET", "/metrics")
    except Instrument:
        return None
    return engine_metrics.parse(response.text) if response.status_code == 200 else None


def check_throughput(client: Client, e: Expectations, runs: int, max_tokens: int, regression_share: float) -> tuple[Check, dict]:
    valid, flagged, samples = [], [], []
    before = engine_counters(client)
    for _ in range(runs):
        run = stream_once(client, e, max_tokens)
        rate = run.tok_s
        sample = {"tokens": run.tokens, "thinking_tokens": run.thinking_tokens, "chunks": run.chunks,
                  "ttft_s": round(run.ttft_s, 4), "decode_s": round(run.decode_s, 4), "reads": run.reads,
                  "tok_s": round(rate, 2) if rate else None, "counted": run.method, "finish_reason": run.finish_reason}
        samples.append(sample)
        # All tokens in one instant, or faster than any Spark decodes: the clock or the count is wrong.
        if rate is None or rate > MAX_PLAUSIBLE_TOK_S:
            flagged.append(sample)
        else:
            valid.append(run)
    figures = {"runs": samples, "prompt": THROUGHPUT_PROMPT, "prompt_words": len(THROUGHPUT_PROMPT.split()),
               "max_tokens": max_tokens, "flagged_impossible": len(flagged)}
    if not valid:
        raise Instrument(f"decode: all {runs} readings impossible (e.g. {flagged[0]}); nothing averaged")
    after = engine_counters(client) if before else None
    median = statistics.median(r.tok_s for r in valid)
    ttft = statistics.median(r.ttft_s for r in valid)
    engine = engine_metrics.between(before, after) if before and after else None
    thinking = statistics.median(r.thinking_tokens for r in valid)
    tokens = statistics.median(r.tokens for r in valid)
    figures |= {"decode_tok_s_median": round(median, 2), "ttft_s_median": round(ttft, 4), "counted": valid[0].method,
                "thinking": thinking > 0, "thinking_tokens_median": thinking, "tokens_median": tokens}
    said = f"thinking on: {thinking:g} of {tokens:g} tokens were thinking" if thinking else "thinking off"
    detail = (f"median of {len(valid)} runs; {said}; ttft {ttft:.2f} s; max_tokens {max_tokens}; "
              f"counted by {valid[0].method}" + (f"; {len(flagged)} impossible reading(s) left out" if flagged else ""))
    status = PASS
    # verify's TTFT is the client's: the request sent, through HTTP, the chat template and tokenization, to the
    # first generated chunk read.
    detail += "; ttft as the client sees it (HTTP, template and tokenization included)"
    if engine is not None:
        figures["engine"] = {"requests": engine.requests,
                             "decode_tok_s": round(engine.decode_tok_s, 2) if engine.decode_tok_s else None,
                             "ttft_s": round(engine.ttft_s, 4) if engine.ttft_s is not None else None}
        said = [f"engine's own /metrics over {engine.requests} request(s):"]
        if engine.decode_tok_s:
            off = median / engine.decode_tok_s - 1
            figures["engine"]["decode_difference"] = round(off, 4)
            said.append(f"decode {engine.decode_tok_s:.1f} tok/s ({off:+.1%} from verify's)")
            if not engine.comparable:
                said.append(f"(not compared: {engine.decode_s:.2f} s of decoding, under the "
                            f"{engine_metrics.MIN_COMPARED_DECODE_S:g} s a comparison needs)")
            elif abs(off) > engine_metrics.DECODE_BOUND:
                status = INSTRUMENT
                said.append(f"more than {engine_metrics.DECODE_BOUND:.0%} apart, so one of the two clocks is wrong "
                            "(or other clients were served meanwhile)")
        if engine.ttft_s is not None:
            said.append(f"ttft {engine.ttft_s * 1000:.1f} ms, verify's {(ttft - engine.ttft_s) * 1000:+.1f} ms above it")
        detail += "; " + " ".join(said)
    if e.expected_decode_tok_s:
        floor = e.expected_decode_tok_s * regression_share
        figures["regression_floor_tok_s"] = round(floor, 2)
        if median < floor:
            status = FAIL if status == PASS else status  # an untrusted reading stays INSTRUMENT
            detail = f"REGRESSION: below {regression_share:.0%} of the expected {e.expected_decode_tok_s:g} tok/s; " + detail
        else:
            detail += f"; expected {e.expected_decode_tok_s:g} tok/s"
    elif e.baseline_note:
        detail += f"; {e.baseline_note}"
    return Check("decode", status, f"{median:.1f} tok/s", detail), figures


def check_vision(client: Client, e: Expectations) -> Check:
    content = [{"type": "text", "text": "What colour is this image?"},
               {"type": "image_url", "image_url": {"url": tiny_png()}}]
    response = chat(client, e.served_model_name, content, max_tokens=16)
    code = response.status_code
    if e.vision is None:
        return Check("vision", PASS, f"HTTP {code}", "no expectation declared; recorded only")
    expected = 200 if e.vision else 400
    why = "vision profile: images must be read" if e.vision else "language-only profile: images must be refused"
    if code != expected:
        return Check("vision", FAIL, f"HTTP {code}", f"expected HTTP {expected} ({why})")
    return Check("vision", PASS, f"HTTP {code}", why)


def check_tools(client: Client, e: Expectations) -> Check:
    response = chat(client, e.served_model_name, "What is the weather in Paris right now? Use the tool.",
                    tools=[TOOL], tool_choice="auto", max_tokens=256)
    if response.status_code != 200:
        return Check("tools", FAIL, f"HTTP {response.status_code}", response.text[:120])
    try:
        message = (response.json().get("choices") or [{}])[0].get("message") or {}
    except (ValueError, AttributeError):
        raise Instrument("tools: 200 OK but not a chat completion; nothing to score") from None
    calls = [c.get("function", {}).get("name") for c in message.get("tool_calls") or []]
    if "get_weather" in calls:
        return Check("tools", PASS, "get_weather", "a tool call came back")
    return Check("tools", FAIL, "-", f"no get_weather tool call (content: {str(message.get('content'))[:60]!r})")


def run_checks(client: Client, e: Expectations, runs: int = 3, max_tokens: int = 128,
               regression_share: float = 0.8) -> Report:
    report = Report(client.base, e)
    steps = [("readiness", lambda: check_readiness(client, e)),
             ("deterministic", lambda: check_deterministic(client, e))]
    for name, step in steps:
        try:
            report.checks.append(step())
        except Instrument as exc:
            report.checks.append(Check(name, INSTRUMENT, "-", str(exc)))
            if name == "readiness":
                return report  # nothing reached the model: the other readings would be noise
            continue  # a smoke answer that could not be scored says nothing of decode, vision, tools or engine
        if name == "readiness" and report.checks[-1].status != PASS:
            return report  # not serving the declared model: measuring it would measure something else
    try:
        check, figures = check_throughput(client, e, runs, max_tokens, regression_share)
        report.checks.append(check)
        report.figures["decode"] = figures
    except Instrument as exc:
        report.checks.append(Check("decode", INSTRUMENT, "-", str(exc)))
    except RuntimeError as exc:
        report.checks.append(Check("decode", FAIL, "-", str(exc)))
    for name, step in (("vision", lambda: check_vision(client, e)), ("tools", lambda: check_tools(client, e)),
                       ("engine", lambda: check_engine(client, e))):
        if name == "tools" and not e.tools:
            continue
        try:
            report.checks.append(step())
        except Instrument as exc:
            report.checks.append(Check(name, INSTRUMENT, "-", str(exc)))
    return report


# --- history ------------------------------------------------------------

def history_dir() -> Path:
    return Path.home() / ".local" / "state" / "sparkstack" / "verify"


def default_history_file(host: str | None = None) -> Path:
    """The history of one host (an inventory host, or a URL's host:port): one JSON line per verify run."""
    label = re.sub(r"[^A-Za-z0-9._-]", "_", host or "unnamed")
    return history_dir() / f"{label}.jsonl"


def append_history(report: Report, path: Path, host: str | None = None, how: dict | None = None) -> str:
    """One line for this run: what was measured (figures, results, the profile's baseline) and how (runs, tokens,
    the route to the model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    e = report.expectations
    decode = report.figures.get("decode", {})
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": host, "url": report.url,
             "model": e.profile or e.served_model_name, "variant": e.variant, "image": e.image,
             "decode_tok_s": decode.get("decode_tok_s_median"), "ttft_s": decode.get("ttft_s_median"),
             "baseline_tok_s": e.expected_decode_tok_s, "how": how or {}, "start": e.start,
             "results": {c.name: c.status for c in report.checks}, "exit_code": report.exit_code}
    line = json.dumps(entry)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return line


def history_table(path: Path) -> str:
    if not path.is_file():
        return f"no verify history yet ({path})"
    rows = [f"{'TIME':<22}{'MODEL':<12}{'VARIANT':<14}{'TOK/S':>8}{'TTFT':>8}  {'EXIT':<5}RESULTS"]
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        results = " ".join(f"{k}={v}" for k, v in (entry.get("results") or {}).items())
        tok = f"{entry['decode_tok_s']:.1f}" if entry.get("decode_tok_s") else "-"
        ttft = f"{entry['ttft_s']:.2f}" if entry.get("ttft_s") else "-"
        rows.append(f"{entry['time']:<22}{entry.get('model') or '-':<12}{entry.get('variant') or '-':<14}{tok:>8}{ttft:>8}  "
                    f"{entry.get('exit_code', '-'):<5}{results}")
    return "\n".join(rows)
