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
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import table  # in the image: /opt/standin is on sys.path
except ImportError:  # imported as tests.standin_engine.server by the unit tests
    from tests.standin_engine import table

KNOBS_FILE = "/root/.cache/huggingface/standin-knobs.json"
RECORD_DIR = "/root/.cache/huggingface/standin-records"


def knobs(served):
    values = {}
    try:
        with open(KNOBS_FILE, encoding="utf-8") as handle:
            values.update(json.load(handle).get(served, {}))
    except (OSError, ValueError):
        pass
    for key in ("load_delay_s", "crash_after_s", "token_rate", "never_ready", "hang", "zero_tokens", "burst"):
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


def make_handler(served, language_only, settings, ready, engine="vllm"):
    token_rate = float(settings.get("token_rate", 200))
    hang = bool(settings.get("hang"))
    zero_tokens = bool(settings.get("zero_tokens"))
    burst = bool(settings.get("burst"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write(f"standin: {self.address_string()} {fmt % args}\n")
            sys.stderr.flush()

        def send_json(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def authorized(self):
            key = os.environ.get("VLLM_API_KEY")
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                self.send_json(401, {"error": "unauthorized"})
                return False
            return True

        def do_GET(self):
            if hang:
                time.sleep(3600)
            if self.path == "/health":
                if ready.is_set():
                    self.send_json(200, {})
                else:
                    self.send_json(503, {"error": "not ready"})
            elif self.path == "/v1/models":
                if self.authorized():
                    self.send_json(200, {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "standin"}]})
            elif self.path == ("/version" if engine == "vllm" else "/server_info"):
                # vLLM: GET /version; SGLang: GET /server_info carries "version" (their http servers).
                self.send_json(200, {"version": table.table(engine)["version"]})
            elif self.path == "/standin/cmdline":
                self.send_json(200, {"argv": sys.argv})
            else:
                self.send_json(404, {"error": "not found"})

        def do_POST(self):
            if hang:
                time.sleep(3600)
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self.send_json(400, {"error": "invalid JSON"})
            if self.path != "/v1/chat/completions":
                return self.send_json(404, {"error": "not found"})
            if not self.authorized():
                return None
            if body.get("model") != served:
                return self.send_json(404, {"error": f"model {body.get('model')!r} does not exist"})
            messages = body.get("messages") or []
            has_image = any(isinstance(m.get("content"), list) and any(part.get("type") == "image_url" for part in m["content"])
                            for m in messages)
            if has_image and language_only:
                return self.send_json(400, {"error": "image input is not supported: started with --language-model-only"})
            text = " ".join(str(m.get("content")) for m in messages)
            max_tokens = int(body.get("max_tokens") or 16)
            tokens = ["204"] if "12*17" in text else [f"tok{i} " for i in range(max_tokens)]
            if zero_tokens:
                tokens = []
            tool_calls = None
            if body.get("tools"):
                fn = body["tools"][0]["function"]["name"]
                tool_calls = [{"id": "call_0", "type": "function", "function": {"name": fn, "arguments": "{}"}}]
            if body.get("stream"):
                return self.stream(tokens)
            message = {"role": "assistant", "content": "".join(tokens)}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return self.send_json(200, {
                "id": "standin-0", "object": "chat.completion", "model": served,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(text.split()), "completion_tokens": len(tokens),
                          "total_tokens": len(text.split()) + len(tokens)},
            })

        def stream(self, tokens):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            pending = []

            def chunk(payload):
                data = f"data: {payload}\n\n".encode()
                pending.append(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                if not burst:
                    self.wfile.write(b"".join(pending))
                    self.wfile.flush()
                    pending.clear()

            for token in tokens:
                if not burst:
                    time.sleep(1.0 / token_rate)
                chunk(json.dumps({"object": "chat.completion.chunk", "model": served,
                                  "choices": [{"index": 0, "delta": {"content": token}}]}))
            chunk("[DONE]")
            self.wfile.write(b"".join(pending) + b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def main(engine, argv):
    # As PID 1 in the container, SIGTERM is ignored unless handled; real engines shut down on it.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    args = parse(engine, argv)
    # Like vLLM, warn about variables with the engine's prefix that this release does not read.
    known = set(table.table(engine)["env_vars"])
    prefix = "VLLM_" if engine == "vllm" else "SGLANG_"
    for name in sorted(os.environ):
        if name.startswith(prefix) and name not in known:
            print(f"standin: Unknown {engine} environment variable detected: {name}", flush=True)
    served = args.served_model_name or (args.model if engine == "vllm" else args.model_path)
    settings = knobs(served)
    record = {"engine": engine, "argv": argv, "knobs": settings, "started": time.time()}
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
    # A real engine opens its port only once the weights are loaded.
    time.sleep(float(settings.get("load_delay_s", 0)))
    ready = threading.Event()
    if not settings.get("never_ready"):
        ready.set()
    language_only = bool(getattr(args, "language_model_only", False))
    server = ThreadingHTTPServer((args.host or "0.0.0.0", args.port or 8000), make_handler(served, language_only, settings, ready, engine))
    print(f"standin: serving {served} on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    # Installed as /usr/local/bin/vllm (`vllm serve ...`) and as the sglang.launch_server module.
    if len(sys.argv) > 1 and sys.argv[1] == "--engine":
        main(sys.argv[2], sys.argv[3:])
    else:
        sys.exit("usage: server.py --engine vllm|sglang ARGS...")
