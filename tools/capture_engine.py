#!/usr/bin/env python3
"""Capture what a real engine answers, on a GPU machine, as the contract the stand-in must keep.

    python tools/capture_engine.py --out DIR [--engine vllm] [--config NAME ...] [--port 8000]

It builds a tiny model on the spot (a Qwen3-MoE-shaped config served with `--load-format dummy`, a
byte-level BPE tokenizer trained on this Python's own standard library, and a Qwen-style chat template
with thinking and Hermes tool tags), so no weights are downloaded. For each server configuration below it
starts the engine's OpenAI server, sends the fixed corpus of requests, and writes what came back to
DIR/<engine>-<version>/<config>.json: status, the headers that matter (and the names of the rest), and
bodies or stream chunks, with ids and times kept as they came (the replay compares shapes, not values).
A configuration the engine refuses to start is recorded too, with the lines of its log that say why.

It runs where the engine is installed (the `device` machine: see ../shared/REAL-ENGINE.md); it needs
`tokenizers` and `requests`, and imports nothing from sparkstack. tests/unit/test_engine_contract.py
replays the captures against the stand-in and through the door.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import requests

API_KEY = "capture-key"  # the engine's key for the capture run (VLLM_API_KEY); not a secret
SERVED = ["tiny", "tiny-alias"]
MAX_MODEL_LEN = 512
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]
# The headers whose values matter to a client; the others are recorded by name only.
KEPT_HEADERS = ("content-type", "allow", "www-authenticate", "retry-after", "content-encoding", "transfer-encoding")

CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions.\n\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' and not loop.first %}{{ raise_exception('System message must be at the beginning.') }}{% endif %}"
    "{% if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "<|im_start|>{{ message.role }}\n{{ message.content if message.content is string else '' }}<|im_end|>\n"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n"
    "{% for call in message.tool_calls %}<tool_call>\n{\"name\": \"{{ call.function.name }}\", \"arguments\": "
    "{{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}}\n</tool_call>"
    "{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def build_model(where: Path) -> Path:
    """The tiny model: config, tokenizer and template; `--load-format dummy` fills the weights at random."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    where.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:120]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=4096 - len(SPECIALS), special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(where / "tokenizer.json"))
    ids = {token: tokenizer.token_to_id(token) for token in SPECIALS}
    (where / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_MODEL_LEN,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None, "unk_token": None,
        "added_tokens_decoder": {str(ids[t]): {"content": t, "special": t.startswith("<|"), "normalized": False,
                                               "lstrip": False, "rstrip": False, "single_word": False}
                                 for t in SPECIALS},
        "chat_template": CHAT_TEMPLATE}, indent=1))
    (where / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 4096,
        "hidden_size": 512, "intermediate_size": 1024, "moe_intermediate_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "num_experts": 16,
        "num_experts_per_tok": 4, "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True,
        "max_position_embeddings": 4096, "rope_theta": 1000000.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16", "attention_bias": False,
        "use_sliding_window": False, "sliding_window": None, "router_aux_loss_coef": 0.001,
        "output_router_logits": False, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"]},
        indent=1))
    (where / "generation_config.json").write_text(json.dumps({"eos_token_id": ids["<|im_end|>"]}))
    return where


def chat(content: str = "What is 12*17?", **extra) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


LONG_PROMPT = " ".join(["word"] * (MAX_MODEL_LEN + 200))

# (name, method, path, body or raw text, sends the key). The 22 requests of the first comparison and more.
PLAIN = [
    ("health", "GET", "/health", None, True),
    ("version", "GET", "/version", None, True),
    ("models", "GET", "/v1/models", None, True),
    ("metrics", "GET", "/metrics", None, True),
    ("chat", "POST", "/v1/chat/completions", chat(), True),
    ("chat-by-alias", "POST", "/v1/chat/completions", {**chat(), "model": "tiny-alias"}, True),
    ("chat-stream", "POST", "/v1/chat/completions", chat(stream=True), True),
    ("chat-stream-usage", "POST", "/v1/chat/completions",
     chat(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}), True),
    ("chat-max-tokens-1", "POST", "/v1/chat/completions", chat(max_tokens=1), True),
    ("completions", "POST", "/v1/completions", {"model": "tiny", "prompt": "Once upon", "max_tokens": 8}, True),
    ("completions-stream", "POST", "/v1/completions",
     {"model": "tiny", "prompt": "Once upon", "max_tokens": 8, "stream": True}, True),
    ("unknown-model", "POST", "/v1/chat/completions", {**chat(), "model": "nope"}, True),
    ("prompt-over-context", "POST", "/v1/chat/completions", chat(LONG_PROMPT), True),
    ("max-tokens-over-context", "POST", "/v1/chat/completions", chat(max_tokens=MAX_MODEL_LEN * 4), True),
    ("no-messages", "POST", "/v1/chat/completions", {"model": "tiny", "max_tokens": 8}, True),
    ("max-tokens-not-a-number", "POST", "/v1/chat/completions", chat(max_tokens="ten"), True),
    ("tool-choice-auto-without-parser", "POST", "/v1/chat/completions",
     chat(tools=[WEATHER_TOOL], tool_choice="auto"), True),
    ("image-to-text-model", "POST", "/v1/chat/completions", {**chat(), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAf"
                                                   "FcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="}}]}]},
     True),
    ("system-not-first", "POST", "/v1/chat/completions", {**chat(), "messages": [
        {"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]}, True),
    ("malformed-json", "POST", "/v1/chat/completions", "{not json", True),
    ("unknown-path", "GET", "/v1/nothing-here", None, True),
    ("get-on-post-route", "GET", "/v1/chat/completions", None, True),
    ("no-key", "POST", "/v1/chat/completions", chat(), False),
    ("wrong-key", "POST", "/v1/chat/completions", chat(), "wrong"),
    ("models-no-key", "GET", "/v1/models", None, False),
    ("thinking-off", "POST", "/v1/chat/completions", chat(chat_template_kwargs={"enable_thinking": False}), True),
]
PARSERS = [
    ("reasoning", "POST", "/v1/chat/completions", chat(max_tokens=16), True),
    ("reasoning-stream", "POST", "/v1/chat/completions", chat(max_tokens=16, stream=True), True),
    ("reasoning-thinking-off-stream", "POST", "/v1/chat/completions",
     chat(max_tokens=16, stream=True, chat_template_kwargs={"enable_thinking": False}), True),
    ("tools-auto", "POST", "/v1/chat/completions",
     chat("Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=16), True),
    ("tools-named", "POST", "/v1/chat/completions",
     chat("Weather in Paris?", tools=[WEATHER_TOOL], max_tokens=48,
          tool_choice={"type": "function", "function": {"name": "get_weather"}}), True),
    ("tools-named-stream", "POST", "/v1/chat/completions",
     chat("Weather in Paris?", tools=[WEATHER_TOOL], max_tokens=48, stream=True,
          tool_choice={"type": "function", "function": {"name": "get_weather"}}), True),
    ("tools-required", "POST", "/v1/chat/completions",
     chat("Weather in Paris?", tools=[WEATHER_TOOL], max_tokens=48, tool_choice="required"), True),
]
NGRAM = [
    ("ngram-stream-usage", "POST", "/v1/chat/completions",
     chat("count: one two three one two three one two three", max_tokens=32, stream=True,
          stream_options={"include_usage": True, "continuous_usage_stats": True}), True),
    ("metrics", "GET", "/metrics", None, True),
]

VLLM_BASE = ["--served-model-name", *SERVED, "--max-model-len", str(MAX_MODEL_LEN), "--load-format", "dummy", "-O0",
             "--gpu-memory-utilization", "0.3", "--max-num-seqs", "8", "--host", "127.0.0.1"]
CONFIGS = {
    "vllm": {
        "plain": (VLLM_BASE, PLAIN),
        "parsers": (VLLM_BASE + ["--reasoning-parser", "qwen3", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
                    PARSERS),
        "ngram": (VLLM_BASE + ["--speculative-config",
                               json.dumps({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4})],
                  NGRAM),
        # The MoE-backend rule: what the engine says when marlin meets an unquantized MoE.
        "marlin-unquantized": (VLLM_BASE + ["--moe-backend", "marlin"], [("health", "GET", "/health", None, True)]),
    },
}
ENGINE_ENV = {"vllm": {"VLLM_USE_FLASHINFER_SAMPLER": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "VLLM_NO_USAGE_STATS": "1", "VLLM_API_KEY": API_KEY}}


def engine_version(engine: str) -> str:
    from importlib.metadata import version

    return version(engine)


def server_argv(engine: str, model: Path, flags: list[str], port: int) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), *flags, "--port", str(port)]


def record_response(response: requests.Response, streamed: bool) -> dict:
    headers = {k.lower(): v for k, v in response.headers.items()}
    kept = {k: v for k, v in headers.items() if k in KEPT_HEADERS}
    answer = {"status": response.status_code, "headers": kept, "header_names": sorted(headers)}
    ctype = headers.get("content-type", "")
    if "text/event-stream" in ctype:
        chunks = []
        for line in response.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: "):
                if line:
                    chunks.append({"line": line})
                continue
            data = line[len("data: "):]
            try:
                chunks.append(json.loads(data))
            except ValueError:
                chunks.append(data)
        answer["chunks"] = chunks
        return answer
    text = response.text
    if "json" in ctype:
        try:
            answer["body"] = json.loads(text)
            return answer
        except ValueError:
            pass
    if response.url.endswith("/metrics"):
        # The families and their types; the sample values are too many and too variable to review.
        answer["families"] = sorted({" ".join(line.split()[2:4]) for line in text.splitlines() if line.startswith("# TYPE ")})
    else:
        answer["text"] = text[:2000]
    return answer


def exchange(base: str, name: str, method: str, path: str, body, key) -> dict:
    headers = {}
    if key is True:
        headers["Authorization"] = f"Bearer {API_KEY}"
    elif isinstance(key, str):
        headers["Authorization"] = f"Bearer {key}"
    request = {"method": method, "path": path, "key": "right" if key is True else ("wrong" if key else "none")}
    data = None
    if isinstance(body, str):
        request["raw"] = body
        data = body.encode()
        headers["Content-Type"] = "application/json"
    elif body is not None:
        request["body"] = body
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    streamed = isinstance(body, dict) and bool(body.get("stream"))
    started = time.monotonic()
    try:
        response = requests.request(method, base + path, data=data, headers=headers, stream=streamed, timeout=120)
        answer = record_response(response, streamed)
    except requests.RequestException as exc:  # recorded, not fatal: the next request may still be answered
        answer = {"failed": f"{type(exc).__name__}: {exc}"}
    answer["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
    return {"name": name, "request": request, "response": answer}


def wait_ready(base: str, process: subprocess.Popen, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if requests.get(base + "/health", timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(1)
    return False


def capture(engine: str, config: str, model: Path, port: int, out: Path, logs: Path) -> Path:
    flags, corpus = CONFIGS[engine][config]
    argv = server_argv(engine, model, flags, port)
    env = os.environ | ENGINE_ENV[engine]
    log_path = logs / f"{engine}-{config}.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    document = {"engine": engine, "version": engine_version(engine), "config": config,
                "flags": flags, "env": sorted(ENGINE_ENV[engine]), "max_model_len": MAX_MODEL_LEN,
                "served_model_names": SERVED, "tool": "tools/capture_engine.py",
                "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        ready = wait_ready(base, process, 300)
        document["start_s"] = round(time.monotonic() - started, 1)
        if not ready:
            lines = log_path.read_text(errors="replace").splitlines()
            document["started"] = False
            document["exit_code"] = process.poll()
            document["refusal"] = [line for line in lines if "Error" in line or "error" in line][-8:]
            print(f"{engine} {config}: did not start ({document['start_s']} s)", flush=True)
        else:
            document["started"] = True
            document["exchanges"] = [exchange(base, *item) for item in corpus]
            print(f"{engine} {config}: started in {document['start_s']} s, {len(corpus)} exchanges", flush=True)
            # What the engine logged as errors while it answered (a 500's cause is only in the log).
            errors = [line for line in log_path.read_text(errors="replace").splitlines()
                      if " ERROR " in line or "Traceback" in line or "Error:" in line]
            document["logged_errors"] = errors[-40:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    target = out / f"{engine}-{document['version']}" / f"{config}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where <engine>-<version>/<config>.json go")
    parser.add_argument("--engine", default="vllm", choices=sorted(CONFIGS))
    parser.add_argument("--config", action="append", help="only these configurations (default: all)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/capture-tiny-model"))
    parser.add_argument("--logs", type=Path, default=Path("/tmp/capture-logs"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    model = build_model(args.model_dir)
    for config in args.config or list(CONFIGS[args.engine]):
        print(capture(args.engine, config, model, args.port, args.out, args.logs), flush=True)


if __name__ == "__main__":
    main()
