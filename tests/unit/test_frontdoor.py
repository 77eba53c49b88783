"""The front door's request fixes and routing rules (sparkstack_host/frontdoor.py), and what the deploy renders for it.

The fixes are checked against the stand-in's copy of the templates' rules (tests/standin_engine/server.py
`template_error`): what the door sends on must be what a strict template accepts.
"""

from __future__ import annotations

import json

import pytest

from tests.standin_engine.server import MISTRAL_ALTERNATION, QWEN_SYSTEM_FIRST, template_error
from sparkstack_host import frontdoor as door
from tests.unit.test_render import rendering_for


MISTRAL = "mistralai/Mistral-Small-4-119B-2603-NVFP4"
QWEN = "Qwen/Qwen3.6-35B-A3B-FP8"

# opencode's title request: its own system prompt, then two user turns in a row.
TITLE_REQUEST = [
    {"role": "system", "content": "You are a title generator."},
    {"role": "user", "content": "Generate a title for this conversation:"},
    {"role": "user", "content": "fix the flaky test"},
]


def test_the_strict_templates_refuse_what_clients_send():
    assert template_error(MISTRAL, TITLE_REQUEST) == MISTRAL_ALTERNATION
    late_system = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]
    assert template_error(QWEN, late_system) == QWEN_SYSTEM_FIRST


def test_merging_makes_a_double_user_turn_one_turn_the_template_accepts():
    fixed, changed = door.apply_fixes({"model": "mistral4", "messages": TITLE_REQUEST}, ["merge_consecutive_turns"])
    assert changed
    assert fixed["messages"] == [TITLE_REQUEST[0], {"role": "user", "content":
                                 "Generate a title for this conversation:\n\nfix the flaky test"}]
    assert template_error(MISTRAL, fixed["messages"]) is None


def test_tool_calls_and_results_are_never_merged():
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                                "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "warm"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "assistant", "content": "And warm."},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        {"role": "user", "content": "bye"},
    ]
    fixed = door.merge_consecutive_turns(messages)
    assert fixed[:4] == messages[:4]  # the call and both results untouched
    assert fixed[4] == {"role": "assistant", "content": "It is sunny.\n\nAnd warm."}
    assert fixed[5] == {"role": "user", "content": "thanks\n\nbye"}
    assert len(fixed) == 6
    assert template_error(MISTRAL, fixed) is None


def test_an_image_turn_is_not_merged_into_text():
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
    messages = [{"role": "user", "content": "look:"}, image]
    assert door.merge_consecutive_turns(messages) == messages


def test_system_messages_move_to_one_at_the_start():
    messages = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"},
                {"role": "assistant", "content": "ok"}, {"role": "system", "content": "use metric"}]
    fixed, changed = door.apply_fixes({"messages": messages}, ["system_first"])
    assert changed and fixed["messages"] == [{"role": "system", "content": "be brief\n\nuse metric"},
                                             {"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    assert template_error(QWEN, fixed["messages"]) is None
    already = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert door.apply_fixes({"messages": already}, ["system_first"]) == ({"messages": already}, False)


def test_fixes_apply_only_where_declared():
    body = {"model": "qwen36", "messages": TITLE_REQUEST}
    assert door.apply_fixes(body, []) == (body, False)
    assert door.apply_fixes(body, ["system_first"]) == (body, False)


@pytest.mark.parametrize("part, found", [
    ({"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}}, True),
    ({"type": "input_image", "image_url": "data:image/png;base64,AA=="}, True),
    ({"type": "text", "text": "an image_url in text is not an image"}, False),
])
def test_image_parts_are_found(part, found):
    assert door.has_image({"messages": [{"role": "user", "content": [part]}]}) is found
    assert door.has_image({"messages": [{"role": "user", "content": "plain"}]}) is False


def test_a_request_names_a_model_by_name_served_name_or_alias():
    models = {"qwen36": {"served_model_name": "qwen3.6", "aliases": ["qwen"]},
              "mistral4": {"served_model_name": "mistral4", "aliases": ["mistral"]}}
    assert door.find_model(models, "qwen") == "qwen36"
    assert door.find_model(models, "qwen3.6") == "qwen36"
    assert door.find_model(models, "mistral4") == "mistral4"
    assert door.find_model(models, "gpt-4") is None


def test_the_registry_carries_the_doors_settings_and_each_models_fixes():
    registry = json.loads(next(f.content for f in rendering_for("spark").files if f.kind == "registry"))
    assert registry["frontdoor"] == {
        "bind": "127.0.0.1", "port": 30080, "api_key_env": None, "on_demand": False, "min_hot_s": 300,
        "hold_s": 600, "connect_timeout_s": 5.0, "read_timeout_s": 600.0, "switch_socket": "/run/sparkstack-switch.sock",
        "allowed_origins": [], "hostnames": [], "max_requests": 64, "max_requests_per_model": 32, "max_waiting": 16,
        "clients_file": "/etc/sparkstack/door-clients.json", "usage_db": "/var/lib/sparkstack/door/usage.sqlite3",
        "monitoring": "key",
        "tls": None}
    assert registry["models"]["mistral4"]["request_fixes"] == ["merge_consecutive_turns"]
    assert registry["models"]["qwen36"]["request_fixes"] == ["system_first"]
    assert registry["models"]["qwen36"]["context_length"] > 0


def test_the_door_runs_unprivileged_and_the_switch_socket_only_runs_serve_request():
    files = {f.kind: f for f in rendering_for("spark").files}
    unit = files["frontdoor-unit"].content
    assert "User=sparkstack-door" in unit and "NoNewPrivileges=yes" in unit and "CapabilityBoundingSet=\n" in unit
    assert "WantedBy=multi-user.target" in unit and "EnvironmentFile=-/etc/sparkstack/secrets.env" in unit
    socket = files["switch-socket"].content
    assert "SocketGroup=sparkstack-door" in socket and "SocketMode=0660" in socket and "Accept=yes" in socket
    assert "ExecStart=/usr/local/bin/llm-switch serve-request" in files["switch-request-unit"].content


def test_an_exposed_group_makes_the_door_ask_for_its_key():
    from sparkstack.groups import load_group_settings

    settings = load_group_settings("spark").model_copy(update={"frontdoor_expose": True})
    registry = json.loads(next(f.content for f in rendering_for("spark", settings).files if f.kind == "registry"))
    assert registry["frontdoor"]["bind"] == "0.0.0.0"
    assert registry["frontdoor"]["api_key_env"] == "SPARKSTACK_FRONTDOOR_API_KEY"
    # Only the door: the engines (SGLang has no env-var key) stay on loopback behind it.
    assert "--publish 127.0.0.1:30000:30000" in next(f.content for f in rendering_for("spark", settings).files
                                                      if f.path.endswith("/launch-mistral4"))


def test_a_door_port_taken_by_a_model_is_refused_before_any_host():
    from sparkstack.groups import load_group_settings
    from sparkstack.render import RenderError

    settings = load_group_settings("spark").model_copy(update={"frontdoor_port": 30001})
    with pytest.raises(RenderError, match=r"profile qwen36 uses port 30001, where this group.s front door listens \(sparkstack_frontdoor_port\); give the profile another `port`, or the door another"):
        rendering_for("spark", settings)


def test_client_configs_carry_every_model_and_the_small_model():
    from sparkstack.clients import ClientModel, Endpoint, aider_conf, aider_metadata, continue_config, opencode

    import yaml

    door = Endpoint("http://spark.local:30080/v1", "SPARKSTACK_FRONTDOOR_API_KEY",
                    [ClientModel("mistral4", 32768, True, True), ClientModel("qwen36", 262144, False, True)],
                    "qwen36", "the hot model")
    oc = json.loads(opencode(door))
    provider = oc["provider"]["sparkstack"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://spark.local:30080/v1", "apiKey": "{env:SPARKSTACK_FRONTDOOR_API_KEY}"}
    assert provider["models"]["mistral4"]["modalities"]["input"] == ["text", "image"]
    assert provider["models"]["qwen36"]["modalities"]["input"] == ["text"] and not provider["models"]["qwen36"]["attachment"]
    assert provider["models"]["qwen36"]["limit"] == {"context": 262144, "output": 32768}
    assert oc["small_model"] == oc["model"] == "sparkstack/qwen36"
    cont = yaml.safe_load(continue_config(door))
    assert cont["schema"] == "v1"
    assert {m["model"]: m["capabilities"] for m in cont["models"]} == {"mistral4": ["tool_use", "image_input"],
                                                                      "qwen36": ["tool_use"]}
    assert cont["models"][0]["apiKey"] == "${{ secrets.SPARKSTACK_FRONTDOOR_API_KEY }}"
    assert yaml.safe_load(aider_conf(door))["weak-model"] == "openai/qwen36"
    meta = json.loads(aider_metadata(door))
    assert meta["openai/mistral4"]["supports_vision"] and not meta["openai/qwen36"]["supports_vision"]
    assert meta["openai/qwen36"]["max_input_tokens"] == 262144


def test_the_client_configs_say_https_when_the_door_speaks_tls():
    from sparkstack.clients import endpoint
    from sparkstack.groups import GroupSettings
    from sparkstack.profiles import load_profiles

    profiles = [lp.profile for lp in load_profiles()]
    # Nothing listens on these ports: the door is not asked which model is hot, and the first is taken.
    plain = endpoint(profiles, GroupSettings(frontdoor_expose=True), "127.0.0.1:9")
    with_tls = endpoint(profiles, GroupSettings(frontdoor_expose=True, frontdoor_tls=True), "127.0.0.1:9")
    assert plain.base_url == "http://127.0.0.1:9/v1" and with_tls.base_url == "https://127.0.0.1:9/v1"


def test_hot_since_follows_the_units_last_start_even_when_the_door_did_not_look_while_it_was_stopped():
    import asyncio

    from tests.unit.fakehost import rendered_registry

    registry = json.loads(rendered_registry())
    door_ = door.Door(registry, web=None, client=None)
    unit = registry["models"]["qwen36"]["unit"]
    started = {"at": 100.0}

    async def unit_states():
        return {unit: ("active", started["at"])}

    async def answers(model):
        return model["unit"] == unit

    door_.unit_states, door_.answers = unit_states, answers
    asyncio.run(door_.refresh())
    assert door_.hot_since["qwen36"] == 100.0
    # `llm-switch none` and `llm-switch qwen` both happen between two looks of the door.
    started["at"] = 5000.0
    asyncio.run(door_.refresh())
    assert door_.hot_since["qwen36"] == 5000.0  # the minimum hot time counts from this start, not the first
