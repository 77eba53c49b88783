"""Measure a served model directly over its OpenAI-compatible API, with an instrument that cannot lie quietly.

Every check ends PASS, FAIL (the model or server answered wrongly) or INSTRUMENT
(no request reached the model, or the reading is impossible): the seeds' 0/30 came
from a harness that never reached the model, so "nothing measured" is never a score.
"""

from __future__ import annotations

import base64
import json
import statistics
import struct
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

PASS, FAIL, INSTRUMENT = "PASS", "FAIL", "INSTRUMENT"
CONNECT_TIMEOUT_S = 3.05
# No single Spark stream decodes anywhere near this; a higher figure means the clock or the count is wrong.
MAX_PLAUSIBLE_TOK_S = 1000.0
DETERMINISTIC_PROMPT = "What is 12*17? Answer with the number only."
DETERMINISTIC_ANSWER = "204"
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
        rows = [f"{'CHECK':<14}{'RESULT':<12}{'FIGURE':<16}DETAIL"]
        rows += [f"{c.name:<14}{c.status:<12}{c.figure:<16}{c.detail}" for c in self.checks]
        verdict = {0: "all checks passed", 1: "a check FAILED", 2: "INSTRUMENT failure: the model was not measured"}[self.exit_code]
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


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Connection reset"):
        if marker in text:
            return marker
    return text[:120]


def chat(client: Client, model: str, content, **extra) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **extra}
    return client.request("POST", "/v1/chat/completions", json=body)


def message_text(payload: dict) -> str:
    message = (payload.get("choices") or [{}])[0].get("message") or {}
    return (message.get("content") or "") + (message.get("reasoning_content") or "")


# --- checks -------------------------------------------------------------

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
    served = [m.get("id") for m in models.json().get("data", [])]
    if e.served_model_name not in served:
        return Check("readiness", FAIL, "-", f"/v1/models lists {served}, not {e.served_model_name!r}")
    return Check("readiness", PASS, "ready", f"/health 200; /v1/models lists {e.served_model_name!r}")


def check_deterministic(client: Client, e: Expectations) -> Check:
    response = chat(client, e.served_model_name, DETERMINISTIC_PROMPT, max_tokens=64)
    if response.status_code != 200:
        return Check("deterministic", FAIL, f"HTTP {response.status_code}", response.text[:120])
    text = message_text(response.json())
    if not text.strip():
        raise Instrument("deterministic: 200 OK with no tokens; nothing to score")
    ok = DETERMINISTIC_ANSWER in text
    return Check("deterministic", PASS if ok else FAIL, DETERMINISTIC_ANSWER if ok else repr(text[:20]),
                 f"12*17 at temperature 0 {'answered 204' if ok else 'did not answer 204'}")


@dataclass
class StreamRun:
    tokens: int
    ttft_s: float
    decode_s: float
    reads: int
    method: str

    @property
    def tok_s(self) -> float | None:
        if self.tokens < 2 or self.decode_s <= 0:
            return None
        return (self.tokens - 1) / self.decode_s


def stream_once(client: Client, model: str, max_tokens: int) -> StreamRun:
    body = {"model": model, "messages": [{"role": "user", "content": THROUGHPUT_PROMPT}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    response = client.request("POST", "/v1/chat/completions", json=body, stream=True)
    if response.status_code >= 500:
        raise Instrument(f"stream: HTTP {response.status_code}; no tokens to time")
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:120]}")
    chunks, first, last, reads, usage, buffer = 0, None, None, 0, None, b""
    try:
        for data in response.iter_content(chunk_size=None):
            reads += 1
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                line = line.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    raise Instrument(f"stream: unreadable event {line[:60]!r}; the count cannot be trusted") from None
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens")
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        now = time.perf_counter()
                        first = first if first is not None else now
                        last = now
                        chunks += 1
    except requests.exceptions.ConnectionError as exc:
        raise Instrument(f"stream: broke off after {chunks} chunks ({_short(exc)})") from None
    if not chunks:
        raise Instrument("stream: 200 OK with no tokens; the model produced nothing measurable")
    tokens, method = (usage, "usage.completion_tokens") if usage else (chunks, "content chunks (1 chunk = 1 token)")
    return StreamRun(tokens, first - started, last - first, reads, method)


def check_throughput(client: Client, e: Expectations, runs: int, max_tokens: int, regression_share: float) -> tuple[Check, dict]:
    valid, flagged, samples = [], [], []
    for _ in range(runs):
        run = stream_once(client, e.served_model_name, max_tokens)
        rate = run.tok_s
        sample = {"tokens": run.tokens, "ttft_s": round(run.ttft_s, 4), "decode_s": round(run.decode_s, 4),
                  "reads": run.reads, "tok_s": round(rate, 2) if rate else None, "counted": run.method}
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
    median = statistics.median(r.tok_s for r in valid)
    ttft = statistics.median(r.ttft_s for r in valid)
    figures |= {"decode_tok_s_median": round(median, 2), "ttft_s_median": round(ttft, 4), "counted": valid[0].method}
    detail = (f"median of {len(valid)} runs; ttft {ttft:.2f} s; max_tokens {max_tokens}; "
              f"counted by {valid[0].method}" + (f"; {len(flagged)} impossible reading(s) left out" if flagged else ""))
    status = PASS
    if e.expected_decode_tok_s:
        floor = e.expected_decode_tok_s * regression_share
        figures["regression_floor_tok_s"] = round(floor, 2)
        if median < floor:
            status = FAIL
            detail = f"REGRESSION: below {regression_share:.0%} of the expected {e.expected_decode_tok_s:g} tok/s; " + detail
        else:
            detail += f"; expected {e.expected_decode_tok_s:g} tok/s"
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
    message = (response.json().get("choices") or [{}])[0].get("message") or {}
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
            return report  # nothing reached the model: the other readings would be noise
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

def default_history_file() -> Path:
    return Path.home() / ".local" / "state" / "sparkstack" / "verify-history.jsonl"


def append_history(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    e = report.expectations
    decode = report.figures.get("decode", {})
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "url": report.url,
             "model": e.profile or e.served_model_name, "variant": e.variant, "image": e.image,
             "decode_tok_s": decode.get("decode_tok_s_median"), "ttft_s": decode.get("ttft_s_median"),
             "results": {c.name: c.status for c in report.checks}, "exit_code": report.exit_code}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def history_table(path: Path) -> str:
    if not path.is_file():
        return f"no verify history yet ({path})"
    rows = [f"{'TIME':<22}{'MODEL':<12}{'VARIANT':<14}{'TOK/S':>8}{'TTFT':>8}  {'EXIT':<5}RESULTS"]
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        results = " ".join(f"{k}={v}" for k, v in entry["results"].items())
        tok = f"{entry['decode_tok_s']:.1f}" if entry.get("decode_tok_s") else "-"
        ttft = f"{entry['ttft_s']:.2f}" if entry.get("ttft_s") else "-"
        rows.append(f"{entry['time']:<22}{entry['model'] or '-':<12}{entry['variant'] or '-':<14}{tok:>8}{ttft:>8}  "
                    f"{entry['exit_code']:<5}{results}")
    return "\n".join(rows)
