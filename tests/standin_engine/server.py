#!/usr/bin/python3
"""Stand-in inference engine: a tiny OpenAI-compatible server for the GPU-less test VM.

It takes the place of the vLLM and SGLang images, which need a GB10 GPU and model
weights. It is invoked with the very command lines sparkstack renders
(`vllm serve MODEL ...` or `python3 -m sglang.launch_server ...`), rejects flags the
real engine would reject, records the command line, and serves /health, /v1/models
and /v1/chat/completions (streaming or not). Image input gets HTTP 400 when started
with --language-model-only, 200 otherwise.

Knobs (environment, or a JSON file in the mounted model cache keyed by served name,
/root/.cache/huggingface/standin-knobs.json, so the rendered launch scripts stay as on a Spark):
  load_delay_s     seconds before the port opens (a model load)           STANDIN_LOAD_DELAY_S
  crash_after_s    exit 1 this many seconds after start                   STANDIN_CRASH_AFTER_S
  token_rate       streamed tokens per second                             STANDIN_TOKEN_RATE
  never_ready      /health answers 503 forever                             STANDIN_NEVER_READY
  hang             accept requests and never answer                        STANDIN_HANG
  zero_tokens      answer 200 with no tokens at all                        STANDIN_ZERO_TOKENS
  burst            send a whole stream in one write (an impossible clock)  STANDIN_BURST
  thinking_tokens  think this many tokens before answering (unless the request turns thinking off)
  tokens_per_chunk tokens per streamed chunk (speculative decoding)
  error_after      send an in-band error event after this many tokens
  drop_after       drop the connection after this many tokens
  hidden_tokens    usage counts this many tokens that were never streamed (a lying count)
  answer           the answer to 12*17 (default 204)
  thinking_always  think even when the request turns thinking off
  finish_reason    end streams with this finish_reason instead (e.g. abort)
  no_done          end streams without the [DONE] marker
  stop_delay_s     take this long to shut down on SIGTERM                  STANDIN_STOP_DELAY_S
  wedge_after_s    this long after the start, generation stalls for good while /health still answers 200 (a
                   wedged engine): a stream gets its headers and no token, a plain request no answer
  wedge_starts     wedge only the first N starts of this served name (counted in the record directory)
  compile_s        a cold start compiles this long first; the compile cache (VLLM_CACHE_ROOT or SGLANG_CACHE_DIR)
                   keeps the result, and a warm start skips it
"""

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import table  # in the image: /opt/standin is on sys.path
except ImportError:  # imported as tests.standin_engine.server by the unit tests
    from tests.standin_engine import table

# The delta / message field each engine streams thinking in: vLLM 0.33 DeltaMessage.reasoning
# (vllm/entrypoints/generate/base/protocol.py), SGLang 0.5 DeltaMessage.reasoning_content
# (sglang/srt/entrypoints/openai/protocol.py).
REASONING_FIELD = {"vllm": "reasoning", "sglang": "reasoning_content"}
# In-band error events, then [DONE]: vLLM ErrorResponse {"error": ErrorInfo}; SGLang a flat ErrorResponse.
ERROR_EVENT = {
    "vllm": {"error": {"message": "stand-in: engine error mid-stream", "type": "InternalServerError", "param": None, "code": 500}},
    "sglang": {"object": "error", "message": "stand-in: engine error mid-stream", "type": "InternalServerError", "param": None, "code": 500},
}
KNOBS_FILE = "/root/.cache/huggingface/standin-knobs.json"
RECORD_DIR = "/root/.cache/huggingface/standin-records"


def knobs(served):
    values = {}
    try:
        with open(KNOBS_FILE, encoding="utf-8") as handle:
            values.update(json.load(handle).get(served, {}))
    except (OSError, ValueError):
        pass
    for key in ("load_delay_s", "crash_after_s", "token_rate", "never_ready", "hang", "zero_tokens", "burst",
                "thinking_tokens", "tokens_per_chunk", "error_after", "drop_after", "hidden_tokens", "thinking_always",
                "stop_delay_s", "no_done", "ramble", "wedge_after_s", "wedge_starts", "compile_s"):
        env = os.environ.get(f"STANDIN_{key.upper()}")
        if env is not None:
            values[key] = float(env)
    return values


def parse(engine, argv):
    """The command line, parsed by the options the declared table gives this engine (engine_table.json)."""
    args = table.parser(engine).parse_args(argv)
    for name in ("port", "max_model_len", "context_length"):
        if getattr(args, name, None) is not None:
            setattr(args, name, int(getattr(args, name)))
    if engine == "vllm" and args.speculative_config is not None:
        args.speculative_config = json.loads(args.speculative_config)
    fraction = args.gpu_memory_utilization if engine == "vllm" else args.mem_fraction_static
    if fraction is None:
        sys.exit(f"{engine}: sparkstack always renders a memory fraction; none was given")
    fraction = float(fraction)
    if not 0 < fraction <= 1:
        sys.exit(f"{engine}: memory fraction {fraction} out of (0, 1]")
    if engine == "vllm" and args.speculative_config is not None and "method" not in args.speculative_config:
        sys.exit("vllm: --speculative-config needs a method")
    if engine == "sglang" and args.speculative_algorithm and not args.speculative_draft_model_path:
        sys.exit("sglang: EAGLE needs --speculative-draft-model-path")
    return args


def weights(engine, args):
    """Find the model (and the draft) in the Hugging Face cache as the real engines do offline: huggingface_hub
    with the revision given on the command line (vLLM --revision and the speculative config's "revision";
    SGLang --revision and --speculative-draft-model-revision). With HF_HUB_OFFLINE=1 a missing revision
    means `main`, which a sha-pinned download never writes, so the start fails like the real engine's."""
    from huggingface_hub import hf_hub_download, snapshot_download

    wanted = [(args.model if engine == "vllm" else args.model_path, args.revision)]
    if engine == "vllm" and args.speculative_config and args.speculative_config.get("model"):
        wanted.append((args.speculative_config["model"], args.speculative_config.get("revision")))
    if engine == "sglang" and args.speculative_draft_model_path:
        wanted.append((args.speculative_draft_model_path, args.speculative_draft_model_revision))
    found = {}
    for repo, revision in wanted:
        try:
            # vLLM 0.33.0's download_weights_from_hf with HF_HUB_OFFLINE=1: no narrowing by the repo's index,
            # so this exact call (weights pattern, default ignore_patterns, local files only); configs via the hub.
            hf_hub_download(repo, "config.json", revision=revision, local_files_only=True)
            path = snapshot_download(repo, revision=revision, allow_patterns="*.safetensors",
                                     ignore_patterns=["original/**/*"], local_files_only=True)
            if not any(name.endswith(".safetensors") for name in os.listdir(path)):
                raise FileNotFoundError(f"no *.safetensors in {path}")
        except Exception as exc:  # the real engines fail the start here too
            sys.exit(f"{engine}: cannot load {repo} at revision {revision or 'main (none given)'} from the cache "
                     f"(offline): {type(exc).__name__}: {exc}")
        found[repo] = {"revision": revision, "path": path, "files": sorted(os.listdir(path))}
        print(f"standin: loaded {repo}@{revision} from {path}", flush=True)
    return found


# What the real chat templates refuse (../shared/BRIEF.md, "Clients and the host"): Mistral's tool-aware
# templates demand strict alternation, Qwen's a system message only first. The engines answer 400.
MISTRAL_ALTERNATION = ("After the optional system message, conversation roles must alternate user and assistant "
                       "roles except for tool calls and results.")
QWEN_SYSTEM_FIRST = "System message must be at the beginning."


def template_error(model, messages):
    """The error the model's own chat template raises for these messages, judged by the model's family."""
    family = model.lower()
    if "mistral" in family:
        turns = [m for m in messages if m.get("role") in ("user", "assistant")
                 and not m.get("tool_calls") and m.get("role") != "tool"]
        rest = messages[1:] if messages and messages[0].get("role") == "system" else messages
        if any(m.get("role") == "system" for m in rest):
            return MISTRAL_ALTERNATION
        for i, message in enumerate(turns):
            if message.get("role") != ("user" if i % 2 == 0 else "assistant"):
                return MISTRAL_ALTERNATION
    if "qwen" in family and any(m.get("role") == "system" for m in messages[1:]):
        return QWEN_SYSTEM_FIRST
    return None


# vLLM 0.24.0 answers "vllm-<version>-<build>"; the stand-in says what it is.
FINGERPRINT = "standin"


def error_body(engine, code, message, kind):
    """An error as the engine shapes it: vLLM ErrorResponse {"error": ErrorInfo}; SGLang a flat ErrorResponse."""
    if engine == "sglang":
        return {"object": "error", "message": message, "type": kind, "param": None, "code": code}
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# Routes the engine serves, by method (vLLM 0.24.0's OpenAI server, as captured in tests/contracts/). A path
# outside them is 404 {"detail": "Not Found"}; a known path with another method 405 with `allow` (FastAPI's own).
GET_ROUTES = ("/health", "/v1/models", "/metrics", "/version", "/server_info", "/standin/cmdline")
POST_ROUTES = ("/v1/chat/completions", "/v1/completions")


class Metrics:
    """The engine's own counters, kept as vLLM keeps them, for what reads /metrics (verify, the door)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.prompt = self.generated = self.decode_sum = self.ttft_sum = 0.0
        self.requests = self.decode_count = self.ttft_count = 0

    def finished(self, prompt_tokens, generated, ttft_s, decode_s):
        with self.lock:
            self.requests += 1
            self.prompt += prompt_tokens
            self.generated += generated
            if generated:
                self.ttft_sum += ttft_s
                self.ttft_count += 1
                self.decode_sum += decode_s
                self.decode_count += 1

    def exposition(self, served):
        label = f'{{engine="0",model_name="{served}"}}'
        with self.lock:
            families = [
                ("vllm:num_requests_running", "gauge", [("", 0)]),
                ("vllm:prompt_tokens", "counter", [("_total", self.prompt)]),
                ("vllm:generation_tokens", "counter", [("_total", self.generated)]),
                ("vllm:request_success", "counter", [("_total", self.requests)]),
                ("vllm:time_to_first_token_seconds", "histogram",
                 [("_count", self.ttft_count), ("_sum", self.ttft_sum)]),
                ("vllm:request_decode_time_seconds", "histogram",
                 [("_count", self.decode_count), ("_sum", self.decode_sum)]),
            ]
        lines = []
        for name, kind, samples in families:
            # As the real exposition names them (tests/contracts/): a counter's TYPE line carries its _total.
            typed = f"{name}_total" if kind == "counter" else name
            lines += [f"# HELP {typed} stand-in counter", f"# TYPE {typed} {kind}"]
            if kind == "histogram":
                count = samples[0][1]
                lines.append(f'{name}_bucket{{engine="0",le="+Inf",model_name="{served}"}} {float(count)}')
            lines += [f"{name}{suffix}{label} {float(value)}" for suffix, value in samples]
        return "\n".join(lines) + "\n"


def make_handler(served, language_only, settings, ready, engine="vllm", model="", served_names=None,
                 max_model_len=None, auto_tools=True):
    """served: the first served name; served_names: all of them (vLLM takes several); max_model_len: the context,
    which requests are checked against as the engine checks them; auto_tools: started with the tool-call parser
    flags (vLLM: --enable-auto-tool-choice), without which tool_choice "auto" is refused."""
    names = list(served_names or [served])
    token_rate = float(settings.get("token_rate", 200))
    hang = bool(settings.get("hang"))
    zero_tokens = bool(settings.get("zero_tokens"))
    burst = bool(settings.get("burst"))
    thinking_tokens = int(settings.get("thinking_tokens", 0))
    tokens_per_chunk = max(1, int(settings.get("tokens_per_chunk", 1)))
    error_after = int(settings["error_after"]) if settings.get("error_after") is not None else None
    drop_after = int(settings["drop_after"]) if settings.get("drop_after") is not None else None
    hidden_tokens = int(settings.get("hidden_tokens", 0))
    answer_text = str(settings.get("answer", "204"))
    thinking_always = bool(settings.get("thinking_always"))
    finish_override = settings.get("finish_reason")
    no_done = bool(settings.get("no_done"))
    # A model with random weights (the captures' own): it never ends and never calls a tool; with thinking on
    # and a reasoning parser, all of it is thinking.
    ramble = bool(settings.get("ramble"))
    wedge_after = float(settings["wedge_after_s"]) if settings.get("wedge_after_s") is not None else None
    born = time.monotonic()
    started = int(time.time())
    metrics = Metrics()

    def thinking_on(body):
        # Qwen3's template (and the engines) switch thinking off with chat_template_kwargs.enable_thinking=false.
        if thinking_always:  # a template that ignores the switch
            return thinking_tokens > 0
        return thinking_tokens > 0 and (body.get("chat_template_kwargs") or {}).get("enable_thinking", True) is not False

    def generate(text, max_tokens, thinking):
        """(kind, text) pieces, one per token, and the finish reason: thinking first, then the answer, cut at
        max_tokens. 12*17 has an answer that ends (finish stop, when it fits before max_tokens); anything else
        rambles on, as a model does, until max_tokens cuts it (finish length, as vLLM says then)."""
        if ramble:
            return [("reasoning" if thinking else "content", f"tok{i} ") for i in range(max_tokens)], "length"
        natural = "12*17" in text
        answer = [("content", answer_text)] if natural else [("content", f"tok{i} ") for i in range(max_tokens)]
        thought = [("reasoning", "12*17=204 " if i == 0 else f"think{i} ") for i in range(thinking_tokens)]
        pieces = (thought if thinking else []) + answer
        return pieces[:max_tokens], ("stop" if natural and len(pieces) < max_tokens else "length")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            # As uvicorn does: each SSE chunk leaves at once, not held back by Nagle's algorithm until the
            # client's delayed ACK (up to 40 ms), which would skew every client-side clock.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, fmt, *args):
            sys.stderr.write(f"standin: {self.address_string()} {fmt % args}\n")
            sys.stderr.flush()

        def send_json(self, code, body, headers=None):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def send_error_body(self, code, message, kind):
            return self.send_json(code, error_body(engine, code, message, kind))

        def send_text(self, code, text, content_type):
            data = text.encode()
            self.send_response(code)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            key = os.environ.get("VLLM_API_KEY")
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                self.send_json(401, {"error": "Unauthorized"})  # vLLM's key middleware: a bare string
                return False
            return True

        def routed(self, method):
            """False (after answering) for a path the engine does not serve with this method."""
            mine, other = (GET_ROUTES, POST_ROUTES) if method == "GET" else (POST_ROUTES, GET_ROUTES)
            if self.path in mine:
                return True
            if self.path in other:
                self.send_json(405, {"detail": "Method Not Allowed"}, {"Allow": "POST" if method == "GET" else "GET"})
            else:
                self.send_json(404, {"detail": "Not Found"})
            return False

        def do_GET(self):
            if hang:
                time.sleep(3600)
            if not self.routed("GET"):
                return None
            if self.path == "/health":
                if ready.is_set():
                    return self.send_text(200, "", None)  # vLLM: 200, no body, no content type
                return self.send_error_body(503, "not ready", "ServiceUnavailableError")
            if self.path == "/v1/models":
                if self.authorized():
                    self.send_json(200, {"object": "list", "data": [
                        {"id": name, "object": "model", "created": started, "owned_by": engine, "root": model or served,
                         "parent": None, "max_model_len": max_model_len, "permission": [{
                             "id": f"modelperm-standin{i}", "object": "model_permission", "created": started,
                             "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                             "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                             "organization": "*", "group": None, "is_blocking": False}]}
                        for i, name in enumerate(names)]})
                return None
            if self.path == "/metrics" and engine == "vllm":
                return self.send_text(200, metrics.exposition(served), "text/plain; version=1.0.0; charset=utf-8")
            if self.path == ("/version" if engine == "vllm" else "/server_info"):
                # vLLM: GET /version; SGLang: GET /server_info carries "version" (their http servers).
                return self.send_json(200, {"version": table.table(engine)["version"]})
            if self.path == "/standin/cmdline":
                return self.send_json(200, {"argv": sys.argv})
            return self.send_json(404, {"detail": "Not Found"})

        def refuse(self, body, messages, prompt_tokens, max_tokens):
            """The 4xx the engine answers before generating, as (code, message, type); None to go on."""
            if body.get("model") not in names:
                return 404, f"The model `{body.get('model')}` does not exist.", "NotFoundError"
            if self.path == "/v1/chat/completions" and not isinstance(body.get("messages"), list):
                return 400, "messages: Field required", "BadRequestError"
            if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
                return 400, "max_tokens: Input should be a valid integer", "BadRequestError"
            if max_model_len and prompt_tokens > max_model_len:
                return 400, (f"This model's maximum context length is {max_model_len} tokens. However, your request "
                             f"has {prompt_tokens} input tokens. Please reduce the length of the input messages."), \
                    "BadRequestError"
            if max_model_len and max_tokens and prompt_tokens + max_tokens > max_model_len:
                return 400, (f"'max_tokens' is too large: {max_tokens}. This model's maximum context length is "
                             f"{max_model_len} tokens and your request has {prompt_tokens} input tokens "
                             f"({max_tokens} > {max_model_len} - {prompt_tokens})."), "BadRequestError"
            if body.get("tool_choice") == "auto" and body.get("tools") and not auto_tools:
                return 400, ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'), \
                    "BadRequestError"
            refused = template_error(model, messages)
            if refused:
                return 400, refused, "BadRequestError"
            has_image = any(isinstance(m.get("content"), list) and
                            any(isinstance(part, dict) and part.get("type") == "image_url" for part in m["content"])
                            for m in messages if isinstance(m, dict))
            if has_image and language_only:
                return 400, "image input is not supported: started with --language-model-only", "BadRequestError"
            return None

        def do_POST(self):
            if hang:
                time.sleep(3600)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.routed("POST"):
                return None
            if not self.authorized():
                return None
            try:
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                return self.send_error_body(400, f"JSON decode error: {exc}", "BadRequestError")
            if not isinstance(body, dict):
                return self.send_error_body(400, "Input should be a valid dictionary", "BadRequestError")
            if wedge_after is not None and time.monotonic() - born >= wedge_after:
                # Wedged: the request is taken and nothing comes, ever (a stream has its headers, then silence).
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                time.sleep(3600)
                return None
            chat = self.path == "/v1/chat/completions"
            messages = body.get("messages") if chat else [{"role": "user", "content": body.get("prompt", "")}]
            messages = messages if isinstance(messages, list) else []
            text = " ".join(str(m.get("content")) for m in messages if isinstance(m, dict))
            prompt_tokens = len(text.split())
            max_tokens = body.get("max_tokens")
            refused = self.refuse(body, messages, prompt_tokens, max_tokens)
            if refused:
                return self.send_error_body(*refused)
            try:  # what reached the engine, for the tests of what sits in front of it
                os.makedirs(RECORD_DIR, exist_ok=True)
                with open(os.path.join(RECORD_DIR, f"{served}-request.json"), "w", encoding="utf-8") as handle:
                    json.dump(body, handle)
            except OSError:
                pass
            if zero_tokens:
                pieces, finish = [], "stop"
            elif not max_tokens:
                # No limit asked: vLLM allows the rest of the context, and a real model ends long before; the
                # stand-in says 16 tokens and ends (finish stop) rather than ramble through the context.
                pieces, _ = generate(text, 16, chat and thinking_on(body))
                finish = "stop"
            else:
                pieces, finish = generate(text, max_tokens, chat and thinking_on(body))
            tool_calls = None
            if chat and body.get("tools") and body.get("tool_choice") != "none" and not ramble:
                fn = body["tools"][0]["function"]["name"]
                tool_calls = [{"id": "call_0", "type": "function", "function": {"name": fn, "arguments": "{}"}}]
            served_as = body["model"]
            if body.get("stream"):
                try:
                    return self.stream(pieces, finish_override or finish, prompt_tokens, body.get("stream_options") or {},
                                       served_as, chat)
                except (BrokenPipeError, ConnectionResetError):
                    # As the engines abort a request whose client is gone.
                    print(f"standin: the client went away mid-stream; generation of {served} stopped", flush=True)
                    self.close_connection = True
                    return None
            generated = len(pieces) + hidden_tokens
            usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + generated,
                     "completion_tokens": generated, "prompt_tokens_details": None}
            metrics.finished(prompt_tokens, generated, 0.001, max(0, len(pieces) - 1) / token_rate)
            # The keys vLLM 0.24.0 answers with (tests/contracts/vllm-0.24.0/plain.json), values the stand-in's.
            head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-standin0", "created": int(time.time()), "model": served_as,
                    "service_tier": None, "system_fingerprint": FINGERPRINT, "usage": usage, "kv_transfer_params": None}
            if not chat:
                return self.send_json(200, {**head, "object": "text_completion", "choices": [
                    {"index": 0, "text": "".join(t for _, t in pieces), "logprobs": None, "finish_reason": finish,
                     "stop_reason": None, "prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None,
                     "token_ids": None}]})
            message = {"role": "assistant", "content": "".join(t for kind, t in pieces if kind == "content") or None,
                       "refusal": None, "annotations": None, "audio": None, "function_call": None,
                       REASONING_FIELD[engine]: None}
            if tool_calls:  # vLLM leaves the key out when no tool was called
                message["tool_calls"] = tool_calls
            thought = "".join(t for kind, t in pieces if kind == "reasoning")
            if thought:
                message[REASONING_FIELD[engine]] = thought
            return self.send_json(200, {
                **head, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish,
                             "stop_reason": None, "token_ids": None, "routed_experts": None}],
                "prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
            })

        def stream(self, pieces, finish, prompt_tokens, options, served_as, chat=True):
            """An SSE stream shaped as the engine's own: vLLM (`reasoning` deltas, finish_reason on the last
            token's chunk) or SGLang 0.5 (`reasoning_content` deltas, a separate finish chunk); per-chunk usage
            under stream_options.continuous_usage_stats, a usage chunk under include_usage, then [DONE]."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            continuous = bool(options.get("continuous_usage_stats"))
            pending = []
            generated = 0
            created = int(time.time())
            ident = f"{'chatcmpl' if chat else 'cmpl'}-standin0"
            kind = "chat.completion.chunk" if chat else "text_completion"

            def usage(count):
                return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + count, "completion_tokens": count}

            def chunk(payload):
                data = f"data: {payload}\n\n".encode()
                pending.append(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                if not burst:
                    self.wfile.write(b"".join(pending))
                    self.wfile.flush()
                    pending.clear()

            def event(delta, finish_reason=None, count=None, first=False):
                """One chunk with vLLM 0.24.0's keys: the role chunk carries prompt_text and prompt_token_ids,
                token chunks token_ids, the last one stop_reason and system_fingerprint."""
                choice = ({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason} if chat else
                          {"index": 0, "text": delta.get("content", ""), "logprobs": None,
                           "finish_reason": finish_reason, "stop_reason": None, "prompt_token_ids": None})
                if not first:
                    choice["token_ids"] = None
                if finish_reason is not None:
                    choice["stop_reason"] = None
                body = {"id": ident, "object": kind, "created": created, "model": served_as, "choices": [choice]}
                if first:
                    body |= {"prompt_text": None, "prompt_token_ids": None}
                if finish_reason is not None:
                    body["system_fingerprint"] = FINGERPRINT
                if continuous:
                    body["usage"] = usage(count if count is not None else generated)
                chunk(json.dumps(body))

            if chat:
                event({"role": "assistant", "content": ""}, first=True)
            paced_from = time.monotonic()
            first_at = None
            groups = [pieces[i:i + tokens_per_chunk] for i in range(0, len(pieces), tokens_per_chunk)]
            for number, group in enumerate(groups):
                if drop_after is not None and generated >= drop_after:
                    self.wfile.write(b"".join(pending))
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the connection just drops
                    return
                if error_after is not None and generated >= error_after:
                    chunk(json.dumps(ERROR_EVENT[engine]))
                    chunk("[DONE]")
                    self.wfile.write(b"".join(pending) + b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                if not burst:
                    # Paced against a fixed schedule, so sleep overshoot does not add up: the true rate is token_rate.
                    time.sleep(max(0.0, paced_from + (generated + len(group)) / token_rate - time.monotonic()))
                first_at = first_at or time.monotonic()
                generated += len(group)
                delta = {}
                for piece_kind, text in group:
                    field = REASONING_FIELD[engine] if piece_kind == "reasoning" else "content"
                    delta[field] = delta.get(field, "") + text
                last = number == len(groups) - 1
                event(delta, finish if (last and engine == "vllm") else None, generated + (hidden_tokens if last else 0))
            if engine == "sglang" or not groups:
                event({} if chat else {"content": ""}, finish, generated + hidden_tokens)
            metrics.finished(prompt_tokens, generated + hidden_tokens, (first_at or paced_from) - paced_from,
                             time.monotonic() - (first_at or paced_from))
            if options.get("include_usage"):
                chunk(json.dumps({"id": ident, "object": kind, "created": created, "model": served_as, "choices": [],
                                  "system_fingerprint": FINGERPRINT, "usage": usage(generated + hidden_tokens)}))
            if not no_done:
                chunk("[DONE]")
            self.wfile.write(b"".join(pending) + b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


# The process names the real engines give the processes that hold the model (setproctitle; the kernel
# keeps 15 characters): vLLM VLLM::EngineCore, SGLang sglang::scheduler.
PROCESS_NAME = {"vllm": "VLLM::EngineCore", "sglang": "sglang::scheduler"}


HEARTBEAT_S = 2
PEER_SILENCE_S = 10


def _heartbeat(conn, peer):
    """Beat to the peer and listen for its beats; a lost peer ends this rank with exit 1, as it ends the real
    engine's collectives (which then leave the process hung or dead; the group switch stops it either way)."""
    def beat():
        while True:
            try:
                conn.sendall(b"beat\n")
            except OSError:
                break
            time.sleep(HEARTBEAT_S)

    def listen():
        conn.settimeout(PEER_SILENCE_S)
        try:
            while conn.recv(64):
                pass
            why = "closed the connection"
        except OSError as exc:
            why = f"went silent ({exc})"
        print(f"standin: lost {peer}: it {why}; exiting", flush=True)
        os._exit(1)

    threading.Thread(target=beat, daemon=True).start()
    threading.Thread(target=listen, daemon=True).start()


def interconnect_env():
    """VLLM_HOST_IP and the interfaces NCCL and Gloo bind to, as a real rank needs them; VLLM_HOST_IP."""
    host_ip = os.environ.get("VLLM_HOST_IP")
    try:  # vLLM binds its own endpoints to VLLM_HOST_IP: it must be an address of this node
        socket.create_server((host_ip, 0)).close()
    except (OSError, TypeError) as exc:
        sys.exit(f"vllm: VLLM_HOST_IP={host_ip!r} is not an address of this node: {exc}")
    for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        interface = os.environ.get(name)
        if not interface or not os.path.exists(f"/sys/class/net/{interface}"):
            sys.exit(f"vllm: {name}={interface!r} names no interface of this node")
    return host_ip


def wait_for_ray_nodes(world, bound):
    """Until `world` nodes are alive in the Ray cluster, asked of the GCS as `ray start` asks it, before
    the stand-in becomes a driver. Not what vLLM does (it connects at once and waits for its placement
    group); a test-VM accommodation: a driver's start on the head (its core worker and the workers Ray
    prestarts for it) kept the head's GCS from answering a joining worker within Ray's hard-coded 30 s
    registration window ("Failed to get node info b'RPC error: Deadline Exceeded'") on two TCG VMs
    sharing two cores. Bounded like the placement below; on timeout the placement reports who is alive."""
    from ray._private.services import canonicalize_bootstrap_address_or_die
    from ray._raylet import GcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    gcs = GcsClient(address=canonicalize_bootstrap_address_or_die("auto"))
    deadline = time.monotonic() + bound
    alive = 0
    while time.monotonic() < deadline:
        try:
            alive = len(gcs.get_all_node_info(timeout=5, state_filter=GcsNodeInfo.GcsNodeState.ALIVE))
        except Exception as exc:  # the GCS is busy or restarting: ask again
            print(f"standin: asking the GCS for its nodes: {exc}", flush=True)
        if alive >= world:
            print(f"standin: {alive} Ray nodes alive; joining as the driver", flush=True)
            return
        time.sleep(2)


def ray_placement(args, settings):
    """vLLM over Ray, played for real: join the Ray cluster the launch script started on this node and the
    workers joined (`ray.init(address="auto")`), reserve one bundle per rank in a STRICT_SPREAD placement
    group (one rank per node, as one GPU per Spark), run a task in every bundle that reports its node's
    address, and exit 1 once a node holding a bundle is gone, as vLLM's engine dies with its Ray workers.
    The stand-in has no GPU: its bundles ask for a CPU where vLLM's ask for a GPU."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    world = int(args.tensor_parallel_size or 1) * int(args.pipeline_parallel_size or 1)
    host_ip = interconnect_env()
    bound = float(settings.get("rendezvous_timeout_s", 120))
    wait_for_ray_nodes(world, bound)
    ray.init(address="auto", logging_level="WARNING", log_to_driver=False)
    print(f"standin: joined the Ray cluster from {host_ip}; placing {world} ranks STRICT_SPREAD (at most {bound:g} s)",
          flush=True)
    group = placement_group([{"CPU": 1}] * world, strategy="STRICT_SPREAD")
    try:
        ray.get(group.ready(), timeout=bound)
    except ray.exceptions.GetTimeoutError:
        alive = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
        sys.exit(f"standin: the placement group of {world} ranks (STRICT_SPREAD) was not placed within {bound:g} s; "
                 f"Ray nodes alive: {', '.join(alive) or 'none'}")

    @ray.remote(num_cpus=1)
    def node_address():
        return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()

    placed = ray.get([node_address.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
        placement_group=group, placement_group_bundle_index=i)).remote() for i in range(world)], timeout=bound)
    for i, (address, _) in enumerate(placed):
        print(f"standin: ray rank {i} placed on {address}", flush=True)
    if len({node for _, node in placed}) != world:
        sys.exit(f"standin: STRICT_SPREAD put two ranks on one node: {placed}")
    nodes = {node: address for address, node in placed}

    def watch():
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            except Exception as exc:  # the head's own Ray is gone
                print(f"standin: lost the Ray cluster ({exc}); exiting", flush=True)
                os._exit(1)
            for node, address in nodes.items():
                if node not in alive:
                    print(f"standin: lost the Ray node at {address}; exiting", flush=True)
                    os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    return 0


def rendezvous(args, settings):
    """vLLM's native multi-node start, played for real over the network: rank 0 listens at --master-addr:
    --master-port and waits, bounded, for every other rank (vLLM's TCPStore waits ~600 s); the others connect.
    Afterwards every rank watches every link, and any lost peer ends it with exit 1."""
    nnodes = int(args.nnodes or 1)
    if nnodes == 1:
        return None
    rank = int(args.node_rank or 0)
    world = int(args.tensor_parallel_size or 1) * int(args.pipeline_parallel_size or 1)
    if world != nnodes:  # one GPU per node, as on a Spark
        sys.exit(f"vllm: tensor x pipeline parallel = {world} ranks, but --nnodes {nnodes} nodes of one GPU each")
    if not args.master_addr or not args.master_port:
        sys.exit("vllm: --nnodes > 1 needs --master-addr and --master-port")
    host_ip = interconnect_env()
    bound = float(settings.get("rendezvous_timeout_s", 120))
    address = (args.master_addr, int(args.master_port))
    if rank == 0:
        listener = socket.create_server(address)
        listener.settimeout(bound)
        print(f"standin: rank 0 of {nnodes} waiting at {address[0]}:{address[1]} for {nnodes - 1} ranks "
              f"(at most {bound:g} s)", flush=True)
        peers = {}
        deadline = time.monotonic() + bound
        while len(peers) < nnodes - 1:
            listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, remote = listener.accept()
            except socket.timeout:
                sys.exit(f"standin: DistStoreError: timed out after {bound:g} s waiting for ranks "
                         f"{sorted(set(range(1, nnodes)) - set(peers))}")
            line = conn.makefile("r").readline().split()
            if len(line) == 2 and line[0] == "rank":
                peers[int(line[1])] = conn
                print(f"standin: rank {line[1]} joined from {remote[0]}", flush=True)
        for peer_rank, conn in peers.items():
            conn.sendall(b"go\n")
            _heartbeat(conn, f"rank {peer_rank}")
    else:
        deadline = time.monotonic() + bound
        while True:
            try:
                conn = socket.create_connection(address, timeout=5, source_address=(host_ip, 0))
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    sys.exit(f"standin: rank {rank} could not reach the master at {address[0]}:{address[1]} "
                             f"within {bound:g} s: {exc}")
                time.sleep(1)
        conn.sendall(f"rank {rank}\n".encode())
        conn.settimeout(bound)
        if conn.makefile("r").readline().strip() != "go":
            sys.exit(f"standin: rank {rank}: the master closed the rendezvous")
        _heartbeat(conn, "rank 0 (the master)")
    print(f"standin: rank {rank} of {nnodes} joined the group at {address[0]}:{address[1]}", flush=True)
    return rank


def compile_step(settings):
    """cold or warm (None without a compile cache): what a real engine's torch.compile does at start, in time only.
    A cold start takes compile_s and leaves its result in the cache; a warm one finds it."""
    root = os.environ.get("VLLM_CACHE_ROOT") or os.environ.get("SGLANG_CACHE_DIR")
    if not root:
        return None
    marker = os.path.join(root, "standin-compiled.json")
    if os.path.exists(marker):
        return "warm"
    time.sleep(float(settings.get("compile_s", 0)))
    try:
        os.makedirs(root, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as handle:
            json.dump({"compiled": time.time()}, handle)
    except OSError as exc:
        print(f"standin: the compile cache is not writable: {exc}", flush=True)
    return "cold"


def main(engine, argv):
    args = parse(engine, argv)
    served = args.served_model_name or (args.model if engine == "vllm" else args.model_path)
    settings = knobs(served)
    stop_delay = float(settings.get("stop_delay_s", 0))

    def shut_down(*_):
        # Real engines shut down on SIGTERM (as PID 1 it is ignored unless handled), some of them slowly.
        time.sleep(stop_delay)
        os._exit(0)

    signal.signal(signal.SIGTERM, shut_down)
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as handle:
            handle.write(PROCESS_NAME[engine][:15])
    except OSError:
        pass
    # Like vLLM, warn about variables with the engine's prefix that this release does not read.
    known = set(table.table(engine)["env_vars"])
    prefix = "VLLM_" if engine == "vllm" else "SGLANG_"
    for name in sorted(os.environ):
        if name.startswith(prefix) and name not in known:
            print(f"standin: Unknown {engine} environment variable detected: {name}", flush=True)
    loaded = weights(engine, args)
    if settings.get("wedge_after_s") is not None and settings.get("wedge_starts") is not None:
        starts = os.path.join(RECORD_DIR, f"{served}.starts")
        try:
            with open(starts, encoding="ascii") as handle:
                count = int(handle.read().strip() or 0) + 1
        except (OSError, ValueError):
            count = 1
        try:
            os.makedirs(RECORD_DIR, exist_ok=True)
            with open(starts, "w", encoding="ascii") as handle:
                handle.write(f"{count}\n")
        except OSError:
            pass
        if count > int(settings["wedge_starts"]):
            settings.pop("wedge_after_s")
    compiled = compile_step(settings)
    record = {"engine": engine, "argv": argv, "knobs": settings, "started": time.time(), "weights": loaded,
              "compile": compiled}
    print(f"standin: {json.dumps(record)}", flush=True)
    try:
        os.makedirs(RECORD_DIR, exist_ok=True)
        with open(os.path.join(RECORD_DIR, f"{served}.json"), "w", encoding="utf-8") as handle:
            json.dump(record, handle)
    except OSError:
        pass
    if settings.get("crash_after_s") is not None:
        def crash():
            time.sleep(float(settings["crash_after_s"]))
            print("standin: crashing as asked (crash_after_s)", flush=True)
            os._exit(1)
        threading.Thread(target=crash, daemon=True).start()
    if engine == "vllm" and getattr(args, "distributed_executor_backend", None) == "ray":
        rank = ray_placement(args, settings)
    else:
        rank = rendezvous(args, settings) if engine == "vllm" else None
    if rank is not None and getattr(args, "headless", False):
        if rank == 0:
            sys.exit("vllm: rank 0 serves the API; --headless is for the other ranks")
        print(f"standin: headless rank {rank}: no API here", flush=True)
        while True:
            signal.pause()
    # A real engine opens its port only once the weights are loaded.
    time.sleep(float(settings.get("load_delay_s", 0)))
    ready = threading.Event()
    if not settings.get("never_ready"):
        ready.set()
    language_only = bool(getattr(args, "language_model_only", False))
    model = args.model if engine == "vllm" else args.model_path
    names = (args.served_model_name if isinstance(args.served_model_name, list) else [served]) if engine == "vllm" else [served]
    context = getattr(args, "max_model_len", None) or getattr(args, "context_length", None)
    auto_tools = bool(getattr(args, "enable_auto_tool_choice", False)) if engine == "vllm" else True
    handler = make_handler(names[0], language_only, settings, ready, engine, model, names, context, auto_tools)
    server = ThreadingHTTPServer((args.host or "0.0.0.0", args.port or 8000), handler)
    print(f"standin: serving {served} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    # Installed as /usr/local/bin/vllm (`vllm serve ...`) and as the sglang.launch_server module.
    if len(sys.argv) > 1 and sys.argv[1] == "--engine":
        main(sys.argv[2], sys.argv[3:])
    else:
        sys.exit("usage: server.py --engine vllm|sglang ARGS...")
