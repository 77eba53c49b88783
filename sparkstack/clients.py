"""Client configs for the front door: opencode, Continue and Aider, from the deployed profiles.

Every client points at the door (one base URL, whatever model is hot), lists every deployed model with its
context window, image input and tool calling, and gets the hot model as its small/weak model, so that a
title or a commit message never makes the door switch models by itself. Formats, as the clients document
them (checked 2026-11):
  opencode  opencode.json: provider.<id>.npm "@ai-sdk/openai-compatible", options.baseURL/apiKey ({env:VAR}),
            models.<id>.limit {context, output}, tool_call, attachment, modalities.input; model, small_model
  Continue  config.yaml (name, version, schema: v1): models[] provider openai, model, apiBase, apiKey
            (${{ secrets.VAR }}), roles, capabilities [tool_use, image_input], defaultCompletionOptions.contextLength
  Aider     .aider.conf.yml (model, weak-model, editor-model, openai-api-base; "openai/<model>" names) and
            .aider.model.metadata.json (litellm's fields: max_input_tokens, supports_vision, ...)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

from sparkstack.groups import GroupSettings
from sparkstack.profiles import Profile
from sparkstack.render import FRONTDOOR_API_KEY_ENV

PROVIDER = "sparkstack"
# What a client may ask for as one reply: sparkstack's choice, an eighth of the window. opencode requires a
# number, and engines refuse a request whose prompt plus max_tokens exceeds the window.
OUTPUT_SHARE = 8


@dataclass(frozen=True)
class ClientModel:
    name: str            # what requests name: the served model name
    context_length: int
    vision: bool
    tools: bool

    @property
    def max_output(self) -> int:
        return self.context_length // OUTPUT_SHARE


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    key_env: str | None      # the env var holding the door's key, when the door is exposed
    models: list[ClientModel]
    small: str               # the hot model (or the first model, when the door could not say)
    small_source: str        # how `small` was chosen, for the printout


def client_models(profiles: list[Profile]) -> list[ClientModel]:
    return [ClientModel(p.served_model_name, p.context_length, p.vision and not p.language_model_only, p.tools is not None)
            for p in profiles]


def hot_model(base_url: str, key: str | None) -> str | None:
    """The model the door says is hot, or None when it does not answer or nothing is hot."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        listed = requests.get(f"{base_url}/models", headers=headers, timeout=3).json()["data"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None
    return next((m["id"] for m in listed if m.get("hot")), None)


def endpoint(profiles: list[Profile], settings: GroupSettings, host: str, key: str | None = None) -> Endpoint:
    models = client_models(profiles)
    if not models:
        raise ValueError("the group deploys no model; nothing to configure")
    # HOST, or HOST:PORT when the door is reached through a forwarded port.
    scheme = "https" if settings.frontdoor_tls else "http"
    base_url = f"{scheme}://{host}/v1" if ":" in host else f"{scheme}://{host}:{settings.frontdoor_port}/v1"
    hot = hot_model(base_url, key)
    if hot is not None and any(m.name == hot for m in models):
        small, source = hot, "the hot model, as the door reported it"
    else:
        small, source = models[0].name, f"the door at {base_url} did not say which model is hot; the first deployed model"
    return Endpoint(base_url, FRONTDOOR_API_KEY_ENV if settings.frontdoor_expose else None, models, small, source)


def opencode(e: Endpoint) -> str:
    models = {}
    for m in e.models:
        models[m.name] = {
            "name": m.name,
            "tool_call": m.tools,
            "attachment": m.vision,
            "modalities": {"input": ["text", "image"] if m.vision else ["text"], "output": ["text"]},
            "limit": {"context": m.context_length, "output": m.max_output},
        }
    options = {"baseURL": e.base_url, "apiKey": f"{{env:{e.key_env}}}" if e.key_env else "sparkstack"}
    document = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {PROVIDER: {"npm": "@ai-sdk/openai-compatible", "name": "sparkstack (DGX Spark)",
                                "options": options, "models": models}},
        "model": f"{PROVIDER}/{e.small}",
        "small_model": f"{PROVIDER}/{e.small}",
    }
    return json.dumps(document, indent=2) + "\n"


def continue_config(e: Endpoint) -> str:
    models = []
    for m in e.models:
        capabilities = ["tool_use"] if m.tools else []
        if m.vision:
            capabilities.append("image_input")
        models.append({
            "name": m.name, "provider": "openai", "model": m.name, "apiBase": e.base_url,
            "apiKey": f"${{{{ secrets.{e.key_env} }}}}" if e.key_env else "sparkstack",
            "roles": ["chat", "edit", "apply"],
            # Continue takes a capabilities list as complete: what is left out counts as absent.
            "capabilities": capabilities,
            "defaultCompletionOptions": {"contextLength": m.context_length},
        })
    document = {"name": "sparkstack", "version": "1.0.0", "schema": "v1", "models": models}
    return yaml.safe_dump(document, sort_keys=False)


def aider_conf(e: Endpoint) -> str:
    document = {"model": f"openai/{e.small}", "weak-model": f"openai/{e.small}", "editor-model": f"openai/{e.small}",
                "openai-api-base": e.base_url, "model-metadata-file": ".aider.model.metadata.json"}
    return yaml.safe_dump(document, sort_keys=False)


def aider_metadata(e: Endpoint) -> str:
    document = {f"openai/{m.name}": {
        "max_tokens": m.max_output, "max_input_tokens": m.context_length, "max_output_tokens": m.max_output,
        "input_cost_per_token": 0, "output_cost_per_token": 0, "litellm_provider": "openai", "mode": "chat",
        "supports_vision": m.vision, "supports_function_calling": m.tools} for m in e.models}
    return json.dumps(document, indent=2) + "\n"


def write_configs(e: Endpoint, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"opencode.json": opencode(e), "continue/config.yaml": continue_config(e),
             ".aider.conf.yml": aider_conf(e), ".aider.model.metadata.json": aider_metadata(e)}
    written = []
    for name, content in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def settings_text(e: Endpoint) -> str:
    """For clients without a config file: what to type into them."""
    key = (f"the value of {e.key_env} from the Spark's /etc/sparkstack/secrets.env" if e.key_env
           else "any non-empty string (the door is on loopback and asks for none)")
    lines = [f"base URL (OpenAI-compatible): {e.base_url}", f"API key: {key}",
             f"small/weak model: {e.small} ({e.small_source})", "models:"]
    for m in e.models:
        lines.append(f"  {m.name}: context {m.context_length}, tools {'yes' if m.tools else 'no'}, "
                     f"images {'yes' if m.vision else 'no'}")
    return "\n".join(lines)
