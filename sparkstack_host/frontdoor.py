"""sparkstack-frontdoor: one OpenAI-compatible endpoint on this host, whatever model is hot.

  GET  /v1/models     every deployed model: its aliases, whether it is hot, its capabilities
  POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses
                      to the hot model when the body's "model" names it or an alias (rewritten to the
                      served name), with the fixes its profile declares; streams pass through as they come
  GET  /health        the door itself
  GET  /running       the hot model: its state, how long it has been hot, its idle TTL and what is left of it,
                      requests in flight and requests waiting for a model to load
  POST /unload        stop the hot model (llm-switch none), once its requests in flight have finished (bounded)
  GET  /version       the hot engine's own version answer
  GET  /status        a status page (HTML, reloads itself): what runs, memory, last requests, usage, switches
  GET  /metrics       Prometheus exposition: the door's requests, tokens, queue, switches, memory and the guard, and
                      the hot engines' own series labelled with their model (door_metrics.py)

Nothing else: the engine is asked for the route the door matched, never for the request's own path, and a path
with a dot segment (`.`, `..`, raw or percent-encoded) or an encoded slash is refused with 400 before routing.

A model with an idle TTL (its profile's idle_ttl_s; only with on-demand switching, so the next request brings it
back) is stopped once nothing has asked for it for that long and nothing is in flight. A request for a model
that is not hot gets 409 naming the hot model and the switch command, or, with
on-demand switching, a switch through llm-switch (one at a time, a minimum hot time, the request held
up to a bound, else 503 with Retry-After). An image sent to a model without vision gets 400 naming the
models that have it. Settings come from the registry's "frontdoor" block (/etc/sparkstack/models.json).

Built on aiohttp from the distribution (python3-aiohttp): an async server and client that stream both
ways, notice a client that goes away, and take bounded connect and read timeouts; the standard library
has no async HTTP client. Runs as an unprivileged user; switching goes through a root-owned socket
(sparkstack-switch-request.socket) that runs only `llm-switch serve-request`. Installed by sparkstack
as sparkstack_host/frontdoor.py behind files/sparkstack-frontdoor.
"""

import argparse
import asyncio
import collections
import hmac
import ipaddress
import json
import os
import signal
import socket
import ssl
import sys
import time
import urllib.parse

from sparkstack_host import compat, connections, contract, door_metrics, status_page, usage, wedgewatch

REGISTRY = contract.REGISTRY_PATH
# The door's view of the models: polled in the background, and refreshed on the spot (at most once per
# FRESH_S) whenever an answer depends on it: a listing, or a request for a model not hot in the last view.
POLL_S = contract.DOOR_POLL_S
FRESH_S = 1.0
# On demand: a model that does not become hot is tried ON_DEMAND_TRIES times, ON_DEMAND_BACKOFF_S[i] apart;
# then 503 with the last reason until it is hot by other means (`llm-switch NAME` by hand) or the door restarts.
# Each try stops the hot model, so a storm of requests must not become a storm of switches.
# A streaming request that waits for its model to load gets an SSE comment this often (the first at once, once
# the switch has taken longer than LOADING_AFTER_S), so its client knows it is loading rather than hung.
LOADING_AFTER_S = 1.0
LOADING_COMMENT_S = 5.0
ON_DEMAND_TRIES = 3
ON_DEMAND_BACKOFF_S = (15, 60)
# The OpenAI API routes the door forwards, matched exactly; an engine's own routes (SGLang's
# /update_weights_from_disk, vLLM's /invocations, /tokenize, ...) are never reachable through the door.
# Images travel inline as base64: room for several. With the cap on requests in flight, what bodies can hold
# of the Spark's memory stays bounded (frontdoor_max_requests x MAX_BODY_BYTES).
MAX_BODY_BYTES = 32 * 1024 * 1024
# The streams that end with `data: [DONE]` (the Responses API ends its own way).
DONE_ROUTES = ("/v1/chat/completions", "/v1/completions")
FORWARDED_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


def path_refusal(raw_path):
    """Why a raw request path is refused before routing, else None: a `.` or `..` segment or an encoded `/` or
    `\\`, however many times percent-encoded (clients and proxies normalise them, so a route matched on one
    spelling could reach another)."""
    path = raw_path.split("?", 1)[0]
    if not path.startswith("/"):
        return "the path is not absolute"
    for segment in path.split("/")[1:]:
        decoded, previous = segment, None
        while decoded != previous:
            previous, decoded = decoded, urllib.parse.unquote(decoded)
        if decoded in (".", ".."):
            return "the path has a dot segment"
        if "/" in decoded or "\\" in decoded or "\x00" in decoded:
            return "the path has an encoded slash, backslash or NUL"
    return None

# --- request fixes (pure functions: the unit tests import them without aiohttp) ---------------------


def _is_plain(message, role):
    """A turn that may be merged: this role, text content, no tool calls (tool calls and results never merge)."""
    return (message.get("role") == role and not message.get("tool_calls") and not message.get("tool_call_id")
            and (isinstance(message.get("content"), str) or _text_parts(message.get("content")) is not None))


def _text_parts(content):
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return [p.get("text", "") for p in content]
    return None


def _text(content):
    return content if isinstance(content, str) else "\n\n".join(_text_parts(content))


def merge_consecutive_turns(messages):
    """Consecutive user turns, and consecutive plain assistant turns, become one turn each (joined with a blank
    line, as mistral-common joins them): strict-alternation templates refuse them. Tool calls, tool results and
    turns carrying images are never merged."""
    merged = []
    for message in messages:
        previous = merged[-1] if merged else None
        role = message.get("role")
        if (previous is not None and role in ("user", "assistant") and _is_plain(previous, role)
                and _is_plain(message, role)):
            merged[-1] = {**previous, "content": _text(previous["content"]) + "\n\n" + _text(message["content"])}
        else:
            merged.append(message)
    return merged


def system_first(messages):
    """Every system message moved to one at the start (joined with a blank line, in order): templates that
    demand it refuse a system message anywhere else."""
    system = [m for m in messages if m.get("role") == "system"]
    if not system or (len(system) == 1 and messages[0].get("role") == "system"):
        return messages
    text = "\n\n".join(_text(m.get("content") or "") for m in system
                       if isinstance(m.get("content"), str) or _text_parts(m.get("content")) is not None)
    return [{"role": "system", "content": text}] + [m for m in messages if m.get("role") != "system"]


FIXES = {"merge_consecutive_turns": merge_consecutive_turns, "system_first": system_first}


def apply_fixes(body, fixes):
    """The body with the profile's declared fixes applied to its messages (system first, then merging), and
    whether anything changed."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not fixes:
        return body, False
    fixed = messages
    for name in ("system_first", "merge_consecutive_turns"):
        if name in fixes:
            fixed = FIXES[name](fixed)
    if fixed == messages:
        return body, False
    return {**body, "messages": fixed}, True


def has_image(body):
    """Does a chat request carry an image part (OpenAI's image_url, or input_image)?"""
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "input_image", "image"):
                    return True
    return False


def message_shape_problem(body):
    """Why a body's messages cannot be what the OpenAI API takes, else None: the fixes and the image check read
    them, and an odd shape must be a 400, never a traceback."""
    messages = body.get("messages")
    if messages is None:
        return None
    if not isinstance(messages, list):
        return "\"messages\" must be a list"
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{number}] must be an object with a \"role\""
        content = message.get("content")
        if content is not None and not isinstance(content, str) and not (
                isinstance(content, list) and all(isinstance(part, dict) for part in content)):
            return f"messages[{number}].content must be a string or a list of parts"
        if isinstance(content, list) and any(part.get("type") == "text" and not isinstance(part.get("text"), str)
                                             for part in content):
            return f"messages[{number}]: a text part's \"text\" must be a string"
    return None


def find_model(models, word):
    """The registry name of the model a request names (its name, served name or an alias), else None."""
    for name, model in models.items():
        if word in (name, model["served_model_name"], *model.get("aliases", ())):
            return name
    return None


def error_body(message, kind, code):
    """The engine's own error shape (vLLM's ErrorResponse, as captured in tests/contracts/): message, type, param, code."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# --- the service ------------------------------------------------------------------------------------


class Door:
    def __init__(self, registry, web, client):
        self.web, self.client = web, client
        config = self.config = registry["frontdoor"]
        # Cluster models are served by their head; a worker's door does not offer them.
        self.models = {n: m for n, m in registry["models"].items() if not m.get("cluster") or m["cluster"]["rank"] == 0}
        # Sets of models that run together: a request for a member brings the whole set (llm-switch SET).
        self.sets = {n: s["members"] for n, s in (registry.get("sets") or {}).items()
                     if all(m in self.models for m in s["members"])}
        self.draining = set()  # hot models an on-demand swap waits to finish with: new requests for them get 503
        self.states = {name: "stopped" for name in self.models}
        self.hot_since = {}
        self.unit_entered = {}  # model -> when its unit last became active (systemd's monotonic clock), 0 if unknown
        self.switch_lock = asyncio.Lock()
        self.switching = None  # (name, task) of the switch under way
        self.key = os.environ.get(config["api_key_env"]) if config.get("api_key_env") else None
        # Named client keys, by digest (the deploy writes them; a name taken out of group data is gone from here).
        self.clients = {digest: name for name, digest in contract.read_clients(config["clients_file"]).items()}
        self.usage = usage.UsageBook(config["usage_db"])
        self.metrics = door_metrics.DoorMetrics(self)
        # For the status page: the last requests, and the changes of what is hot the door has seen (and why).
        self.recent = collections.deque(maxlen=20)
        self.switch_log = collections.deque(maxlen=20)
        self.seen_hot = ...  # nothing seen yet: the first look is not a switch
        self.door_switching = 0  # switches of the door's own under way (they log themselves)
        self.session = None
        self.wake = asyncio.Event()
        self.refresh_lock = asyncio.Lock()
        self.refreshed_at = float("-inf")
        self.failures = {}  # model or set -> (failed on-demand tries, when the last one failed, why)
        self.active = 0  # requests in forward(), reading their body or answered
        self.in_flight = {name: 0 for name in self.models}  # requests forwarded to each model's engine
        self.max_model_len = {}  # served name -> the context its engine last listed (vLLM's /v1/models)
        self.last_used = {}  # model -> when a request for it last began or ended (monotonic)
        self.waiting = 0  # requests held while their model loads (on demand)
        self.wedge = wedgewatch.WedgeWatch(self, registry.get("wedge"))

    # - state --------------------------------------------------------------------------------------
    def log_switch(self, before, after, why):
        self.switch_log.append({"at": time.time(), "from": before, "to": after, "why": why})
        self.seen_hot = after

    def hot_models(self):
        return [n for n, s in self.states.items() if s == "hot"]

    def hot(self):
        """What is hot: a model's name, a set's name when exactly its members are hot, or None."""
        names = self.hot_models()
        if len(names) > 1:
            return contract.set_running(self.sets, names) or names[0]
        return names[0] if names else None

    def members(self, label):
        """The models a model's or a set's name stands for."""
        return list(self.sets[label]) if label in self.sets else [label]

    def target_for(self, name):
        """What an on-demand load of `name` starts: the first set it is a member of, else the model alone."""
        return next((s for s, members in self.sets.items() if name in members), name)

    def is_hot(self, label):
        return all(self.states.get(m) == "hot" for m in self.members(label))

    def hot_for(self, label):
        """Seconds since the last of the label's models became hot."""
        return time.monotonic() - max(self.hot_since.get(m, time.monotonic()) for m in self.members(label))

    def upstream_headers(self, model):
        """The engine's key (from the secrets file systemd read into the door's environment), when it has one."""
        name = model.get("api_key_env")
        key = os.environ.get(name) if name else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def unit_states(self):
        """unit -> (ActiveState, ActiveEnterTimestampMonotonic in s) from systemd, in one call."""
        units = [m["unit"] for m in self.models.values()]
        process = await asyncio.create_subprocess_exec(
            "systemctl", "show", "--property=Id,ActiveState,ActiveEnterTimestampMonotonic", *units,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await process.communicate()
        states = {}
        for block in out.decode().split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if "Id" in fields:
                entered = int(fields.get("ActiveEnterTimestampMonotonic") or 0) / 1e6
                states[fields["Id"]] = (fields.get("ActiveState", "unknown"), entered)
        return states

    async def answers(self, model):
        """Does the engine's /v1/models list the model (it is loaded and serving)? A kept-alive connection the engine
        closed meanwhile is tried once more on a new one: a closed idle connection is not a model gone."""
        for attempt in (1, 2):
            try:
                return await self.answers_once(model)
            except (self.client.ServerDisconnectedError, self.client.ClientOSError):
                if attempt == 2:
                    return False
        return False

    async def answers_once(self, model):
        try:
            async with self.session.get(f"http://127.0.0.1:{model['port']}/v1/models", headers=self.upstream_headers(model),
                                        timeout=self.client.ClientTimeout(total=2)) as response:
                if response.status != 200:
                    return False
                listed = await response.json(content_type=None)
                entry = next((m for m in listed.get("data", []) if m.get("id") == model["served_model_name"]), None)
                if entry is not None and isinstance(entry.get("max_model_len"), int):
                    self.max_model_len[model["served_model_name"]] = entry["max_model_len"]  # what the engine runs with
                return entry is not None
        except (self.client.ServerDisconnectedError, self.client.ClientOSError):
            raise
        except (self.client.ClientError, asyncio.TimeoutError, ValueError):
            return False

    async def refresh(self):
        try:
            units = await self.unit_states()
        except OSError:
            units = {}
        for name, model in self.models.items():
            active, entered = units.get(model["unit"], ("unknown", 0))
            self.unit_entered[name] = entered
            if await self.answers(model):
                state = "hot"
            elif active in ("active", "activating", "reloading"):
                state = "loading"
            elif active == "failed":
                state = "failed"
            else:
                state = "stopped"
            if state == "hot":
                # Hot since its unit last started: read every time, since the door may not have looked while
                # the model was stopped and started again (without systemd: since the door first saw it hot).
                if entered:
                    self.hot_since[name] = entered
                elif self.states.get(name) != "hot":
                    self.hot_since[name] = time.monotonic()
            self.states[name] = state
        for target in list(self.failures):
            if self.is_hot(target):
                self.failures.pop(target)  # hot by any road: on-demand tries start afresh
        # A change the door did not make, once settled (nothing loading, no switch of the door's under way).
        now_hot = self.hot()
        settled = not self.door_switching and not any(s == "loading" for s in self.states.values())
        if settled and self.seen_hot is not ... and now_hot != self.seen_hot:
            self.log_switch(self.seen_hot, now_hot, "llm-switch on the host, or the memory guard")
        if settled or self.seen_hot is ...:
            self.seen_hot = now_hot
        self.refreshed_at = time.monotonic()

    async def fresh(self, max_age=FRESH_S):
        """The view, refreshed unless it is younger than max_age (one refresh at a time)."""
        async with self.refresh_lock:
            if time.monotonic() - self.refreshed_at >= max_age:
                await self.refresh()

    async def poll(self):
        ttls = [m.get("idle_ttl_s") for m in self.models.values() if m.get("idle_ttl_s")]
        # With an idle TTL the door looks often enough to stop a model within a second or so of its TTL.
        interval = min([POLL_S] + [max(1.0, ttl / 10) for ttl in ttls]) if self.config["on_demand"] else POLL_S
        while True:
            try:
                await self.fresh(0)
                await self.expire_idle()
            except Exception as exc:  # the door keeps serving on its last view
                print(f"sparkstack-frontdoor: refresh failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), interval)
            except asyncio.TimeoutError:
                pass

    # - handlers -----------------------------------------------------------------------------------
    def json(self, code, body, headers=None):
        return self.web.json_response(body, status=code, headers=headers)

    def authorized(self, request):
        """The client a request comes from: "owner" for the door's own key, a named client's name for its key,
        "local" when the door has no key at all (loopback only); None when its key is missing or wrong."""
        if self.key is None and not self.clients:
            return "local"
        given = request.headers.get("Authorization", "")
        # Bytes not UTF-8 arrive as surrogates: compared as they came, never a 500.
        raw = given.encode("utf-8", "surrogateescape")
        if self.key is not None and hmac.compare_digest(raw, f"Bearer {self.key}".encode()):
            return "owner"
        if self.clients and raw.startswith(b"Bearer "):
            digest = contract.key_digest(given[len("Bearer "):])
            # Every digest is compared, in constant time: which client matched takes no longer than none.
            found = [name for known, name in self.clients.items() if hmac.compare_digest(known, digest)]
            return found[0] if found else None
        return None

    def unauthorized(self):
        return self.json(401, error_body("this endpoint needs its API key: Authorization: Bearer <key>",
                                         "authentication_error", 401))

    async def health(self, request):
        if not self.authorized(request):  # the key guards every route, this one too (it names the hot model)
            return self.unauthorized()
        return self.json(200, {"status": "ok", "hot": self.hot()})

    def idle_ttl(self, label):
        """The model's idle TTL in seconds, or None: only with on-demand switching, which brings it back. A set has
        one when every member has one: the longest."""
        ttls = [self.models[m].get("idle_ttl_s") for m in self.members(label)]
        return max(ttls) if all(ttls) and self.config["on_demand"] else None

    def idle_for(self, label):
        """Seconds since any of the label's models was last asked for (or became hot)."""
        since = max(max(self.last_used.get(m, float("-inf")), self.hot_since.get(m, float("-inf")))
                    for m in self.members(label))
        return time.monotonic() - since if since > float("-inf") else 0.0

    def in_flight_for(self, label):
        return sum(self.in_flight[m] for m in self.members(label))

    async def running(self, request):
        if not self.authorized(request):
            return self.unauthorized()
        await self.fresh()
        hot = self.hot()
        loading = [n for n, s in self.states.items() if s == "loading"]
        body = {"hot": hot, "state": "hot" if hot else ("loading" if loading else "none"),
                "set": hot if hot in self.sets else None, "models": self.hot_models(),
                "loading": loading[0] if loading else None,
                "switching": self.switching[0] if self.switching and not self.switching[1].done() else None,
                "draining": sorted(self.draining), "waiting": self.waiting, "max_waiting": self.config["max_waiting"],
                "in_flight": sum(self.in_flight.values()), "wedges": self.wedges()}
        if hot:
            ttl = self.idle_ttl(hot)
            body.update(hot_for_s=round(self.hot_for(hot), 1),
                        idle_s=round(self.idle_for(hot), 1), idle_ttl_s=ttl,
                        ttl_left_s=round(max(0.0, ttl - self.idle_for(hot)), 1) if ttl else None,
                        in_flight=self.in_flight_for(hot))
        return self.json(200, body)

    async def unload(self, request):
        """Stop the hot model: new requests for it wait for the switch lock, those in flight finish first
        (up to the door's hold), then llm-switch none through the root-owned socket."""
        if not self.authorized(request):
            return self.unauthorized()
        # The body is read, bounded like every other (413 past the cap), and must be a JSON object: `{}`.
        try:
            raw = await asyncio.wait_for(request.read(), connections.BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return refused(self.web, request, 408, f"the body did not arrive within {connections.BODY_TIMEOUT_S:.0f} s")
        try:
            asked = json.loads(raw or b"{}")
        except ValueError:
            asked = None
        if not isinstance(asked, dict):
            return refused(self.web, request, 400, "/unload takes a JSON object as its body: {}")
        async with self.switch_lock:
            await self.fresh(0)
            hot = self.hot()
            if hot is None:
                return self.json(409, error_body("no model is hot; nothing to unload", "nothing_hot", 409))
            ok, message = await self.stop_hot(hot, "asked on /unload")
        if not ok:
            return self.json(503, error_body(f"could not unload {hot}: {message}", "model_unavailable", 503))
        return self.json(200, {"unloaded": hot, "message": message})

    async def drain(self, names):
        """Wait, bounded by the door's hold, until no request is in flight to any of `names`; the message when some
        still are, else None. From here until the caller's switch is over (it clears self.draining), new requests
        for them get 503: forward() reads self.draining."""
        self.draining = set(names)
        deadline = time.monotonic() + self.config["hold_s"]
        while sum(self.in_flight[n] for n in names) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = sum(self.in_flight[n] for n in names)
        return f"{left} request(s) still in flight to {', '.join(names)} after {self.config['hold_s']} s" if left else None

    async def stop_hot(self, name, why):
        """Drain `name` (a model or a set; bounded by the door's hold), then stop it; (ok, message). Called under
        the switch lock."""
        members = self.members(name)
        began = time.monotonic()
        ok = False
        self.door_switching += 1
        try:
            busy = await self.drain(members)
            if busy:
                self.metrics.switched("none", "drain_timeout", time.monotonic() - began)
                return False, busy
            print(f"sparkstack-frontdoor: stopping {name} ({why})", flush=True)
            try:
                ok, message = await self.switch("none")
            except OSError as exc:
                ok, message = False, f"the switch socket does not answer ({exc})"
            self.wake.set()
            await self.fresh(0)
            ok = ok and not any(self.states[m] == "hot" for m in members)
            self.metrics.switched("none", "ok" if ok else "failed", time.monotonic() - began)
            if ok:
                self.log_switch(name, None, why)
        finally:
            self.draining = set()
            self.door_switching -= 1
        return ok, message

    async def expire_idle(self):
        """Stop the hot model once its idle TTL has passed with nothing in flight or waiting."""
        hot = self.hot()
        ttl = self.idle_ttl(hot) if hot else None
        if not ttl or self.in_flight_for(hot) or self.waiting or self.idle_for(hot) < ttl:
            return
        async with self.switch_lock:
            if self.hot() == hot and not self.in_flight_for(hot) and self.idle_for(hot) >= ttl:
                await self.stop_hot(hot, f"idle for {self.idle_for(hot):.0f} s, its TTL is {ttl} s")

    def status_view(self):
        guard = door_metrics.read_guard_state()
        total, available = door_metrics.guard_memory(guard) or (None, None)
        floor = guard.get("floor_gb")
        action = guard.get("last_action")
        self.usage.flush()  # what was counted a moment ago shows at once
        hot = self.hot()
        loading = [n for n, s in self.states.items() if s == "loading"]
        return {
            "now": time.time(), "hot": hot, "set": hot in self.sets, "models": sorted(self.hot_models()),
            "hot_for_s": round(self.hot_for(hot)) if hot else None, "loading": loading[0] if loading else None,
            "switching": self.switching[0] if self.switching and not self.switching[1].done() else None,
            "in_flight": sum(self.in_flight.values()), "waiting": self.waiting,
            "memory": {"total": total, "available": available, "floor": floor * door_metrics.GIB if floor else None}
            if total else None,
            "guard_action": action.get("message") if isinstance(action, dict) else None,
            "recent": list(self.recent), "usage": usage.read_usage(self.config["usage_db"]),
            "switches": list(self.switch_log),
            "verify": status_page.read_verify_history(contract.VERIFY_HISTORY),
            "wedges": self.wedges(),
        }

    def wedges(self):
        """The wedge watch's record, as llm-switch keeps it: per model its state, reason, restarts this hour and
        last log lines."""
        return {name: {**record, "restarts_last_hour": len(contract.restarts_within_hour(record))}
                for name, record in contract.read_state(contract.WEDGE_STATE).items()
                if name in self.models and isinstance(record, dict)}

    def may_watch(self, request):
        """/metrics and /status: with the door's key; from loopback also without, when the group says so
        (sparkstack_frontdoor_monitoring = "loopback": a browser or a Prometheus on the Spark, or through ssh -L)."""
        if self.config["monitoring"] == "loopback" and request.remote in ("127.0.0.1", "::1"):
            return True
        return bool(self.authorized(request))

    async def status(self, request):
        """The status page: what runs, memory and the guard's floor, the last requests, usage per key, switches."""
        if not self.may_watch(request):
            return self.unauthorized()
        await self.fresh()
        return self.web.Response(text=status_page.render(self.status_view()), content_type="text/html")

    async def metrics_page(self, request):
        """The door's metrics and the hot engines' own, in one scrape (door_metrics.py); see may_watch."""
        if not self.may_watch(request):
            return self.unauthorized()
        engines = {}
        for name in self.hot_models():
            model = self.models[name]
            try:
                async with self.session.get(f"http://127.0.0.1:{model['port']}/metrics", headers=self.upstream_headers(model),
                                            timeout=self.client.ClientTimeout(total=2)) as answer:
                    if answer.status == 200:
                        engines[name] = await answer.text()
            except (self.client.ClientError, asyncio.TimeoutError, UnicodeDecodeError):
                pass  # the door's own series still go out
        return self.web.Response(body=self.metrics.exposition(engines), headers={"Content-Type": door_metrics.CONTENT_TYPE})

    async def version(self, request):
        """The hot engine's own /version (vLLM's route), passed through; the door's state when none is hot."""
        if not self.authorized(request):
            return self.unauthorized()
        await self.fresh()
        hot = self.hot()
        if hot is None:
            return self.json(503, error_body("no model is hot, so no engine to ask its version", "model_unavailable", 503))
        model = self.models[self.members(hot)[0]]
        path = model["version_path"]
        try:
            async with self.session.get(f"http://127.0.0.1:{model['port']}{path}", headers=self.upstream_headers(model),
                                        timeout=self.client.ClientTimeout(total=5)) as response:
                body = await response.read()
                return self.web.Response(body=body, status=response.status,
                                         content_type=response.content_type or "application/json")
        except (self.client.ClientError, asyncio.TimeoutError) as exc:
            return self.json(502, error_body(f"{hot}'s engine did not answer {path}: {type(exc).__name__}",
                                             "upstream_error", 502))

    async def list_models(self, request):
        if not self.authorized(request):
            return self.unauthorized()
        await self.fresh()
        data = []
        for name, model in self.models.items():
            data.append({
                "id": model["served_model_name"], "object": "model", "owned_by": "sparkstack",
                "name": name, "aliases": model.get("aliases", []),
                "hot": self.states[name] == "hot", "state": self.states[name],
                "capabilities": {"vision": bool(model.get("vision")) and not model.get("language_model_only"),
                                 "tools": bool(model.get("tools")), "context_length": model.get("context_length")},
                # As vLLM lists it: the engine's own figure once it has answered, else the profile's.
                "max_model_len": self.max_model_len.get(model["served_model_name"], model.get("context_length")),
            })
        return self.json(200, {"object": "list", "data": data})

    def vision_models(self):
        return [n for n, m in self.models.items() if m.get("vision") and not m.get("language_model_only")]

    def not_hot(self, name):
        hot = self.hot()
        loading = [n for n, s in self.states.items() if s == "loading"]
        where = (f"the hot model is {hot}" if hot else
                 f"{loading[0]} is loading" if loading else "no model is hot")
        message = (f"model {name} is not hot: {where}. Switch with `llm-switch {name}` on this host"
                   + (f" (it stops {hot})" if hot else "")
                   + ", or set sparkstack_frontdoor_on_demand = True in the group's data to let the door switch")
        return self.json(409, {"error": {"message": message, "type": "model_not_hot", "param": None, "code": 409,
                                         "hot": hot, "requested": name}})

    def unavailable(self, name, why, retry_after=None):
        state = self.states.get(name) or ("hot" if self.is_hot(name) else "not hot")
        headers = {"Retry-After": str(max(1, int(retry_after)))} if retry_after else None
        return self.json(503, {"error": {"message": f"model {name} is {state}: {why}", "type": "model_unavailable", "param": None,
                                         "code": 503, "state": state}}, headers)

    async def switch(self, name, detail=None):
        """Ask root's switch socket for `llm-switch NAME` (or `wedged MODEL` with the reason on a second line);
        (ok, last lines)."""
        reader, writer = await asyncio.open_unix_connection(self.config["switch_socket"])
        writer.write(f"{name}\n".encode() + (f"{detail}\n".encode() if detail else b""))
        await writer.drain()
        output = (await reader.read()).decode(errors="replace")
        writer.close()
        lines = [line for line in output.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1]) if lines else {}
        except ValueError:
            result = {}
        return bool(result.get("ok")), result.get("message") or " / ".join(lines[-3:]) or "no answer from the switch"

    def backoff_left(self, target, tries, failed_at):
        """Seconds before the door may try `target` again: 0 now, -1 never (it used its tries)."""
        if tries >= ON_DEMAND_TRIES:
            return -1.0
        return max(0.0, failed_at + ON_DEMAND_BACKOFF_S[tries - 1] - time.monotonic())

    def backoff(self, name):
        """503 while `name` waits out its backoff or has used its tries; None when it may be tried."""
        if name not in self.failures:
            return None
        tries, failed_at, why = self.failures[name]
        if tries >= ON_DEMAND_TRIES:
            return self.unavailable(name, f"the door tried {tries} times to make it hot and stopped trying (last: {why}); "
                                    f"it tries again once `llm-switch {name}` succeeds on this host or the door restarts")
        wait = failed_at + ON_DEMAND_BACKOFF_S[tries - 1] - time.monotonic()
        if wait > 0:
            return self.unavailable(name, f"the last try to make it hot failed ({why}); try {tries + 1} of "
                                    f"{ON_DEMAND_TRIES} in {wait:.0f} s", wait)
        return None

    async def switch_and_record(self, name):
        """One on-demand switch of a model or a set: what is hot finishes its requests first (bounded; a swap never
        cuts a running answer), then llm-switch. A failed load counts towards the backoff, a success clears it."""
        hot = self.hot_models()
        began = time.monotonic()
        ok, outcome = False, "failed"
        before = self.hot()
        self.door_switching += 1
        try:
            if hot:
                print(f"sparkstack-frontdoor: draining {', '.join(hot)} before the switch to {name}", flush=True)
                busy = await self.drain(hot)
                if busy:
                    outcome = "drain_timeout"
                    return False, f"the swap waited for what runs: {busy}"
            try:
                ok, message = await self.switch(name)
            except OSError as exc:
                ok, message = False, f"the switch socket does not answer ({exc})"
            self.wake.set()
            await self.fresh(0)
            outcome = "ok" if ok and self.is_hot(name) else "failed"
            if outcome == "ok":
                self.log_switch(before, name, "on demand")
        finally:
            self.door_switching -= 1
            self.draining = set()  # the switch is over: what is hot now takes requests
            self.metrics.switched(name, outcome, time.monotonic() - began)
        if not ok or not self.is_hot(name):
            tries = self.failures.get(name, (0,))[0] + 1
            self.failures[name] = (tries, time.monotonic(), message)
            print(f"sparkstack-frontdoor: on-demand switch to {name} failed (try {tries} of {ON_DEMAND_TRIES}): {message}",
                  flush=True)
            return False, message
        return True, message

    async def switch_on_demand(self, requested):
        """None once `requested` is hot (with its set, if it has one); else the response to give (503 with
        Retry-After)."""
        hold = self.config["hold_s"]
        name = self.target_for(requested)
        async with self.switch_lock:
            await self.fresh(0)
            if self.states[requested] == "hot" and not self.draining:
                return None
            if self.switching is None or self.switching[0] != name or self.switching[1].done():
                refusal = self.backoff(name)
                if refusal is not None:
                    return refusal
                hot = self.hot()
                if hot is not None:
                    held = self.hot_for(hot)
                    if held < self.config["min_hot_s"]:
                        wait = self.config["min_hot_s"] - held
                        return self.unavailable(name, f"{hot} has been hot for {held:.0f} s and the door keeps a model "
                                                f"hot at least {self.config['min_hot_s']} s; retry in {wait:.0f} s", wait)
                if self.switching is not None and not self.switching[1].done():
                    return self.unavailable(name, f"the door is switching to {self.switching[0]}", 10)
                print(f"sparkstack-frontdoor: switching to {name} on demand (hot: {hot or 'none'})", flush=True)
                self.switching = (name, asyncio.ensure_future(self.switch_and_record(name)))
            task = self.switching[1]
        try:
            ok, message = await asyncio.wait_for(asyncio.shield(task), hold)
        except asyncio.TimeoutError:
            return self.unavailable(name, f"switching to it, not ready within the door's hold of {hold} s", 15)
        if not ok:
            return self.unavailable(name, f"the switch did not make it hot: {message}")
        return None

    async def forward(self, request):
        client = self.authorized(request)
        if not client:
            return self.unauthorized()
        response = None
        request["started"] = time.monotonic()
        try:
            # Counted from here, body and all: the bodies in memory are bounded by max_requests x MAX_BODY_BYTES.
            if self.active >= self.config["max_requests"]:
                response = self.too_many(request, f"the door has {self.active} requests in flight, its most "
                                                  "(sparkstack_frontdoor_max_requests)")
                return response
            self.active += 1
            try:
                response = await self.forward_counted(request)
                return response
            finally:
                self.active -= 1
        finally:
            # Each request counts for its client: its model, the tokens its engine reported, and whether it failed
            # (an error status, or a stream that ended in an error event).
            prompt, completion = request.get("tokens", (0, 0))
            failed = response is None or response.status >= 400 or request.get("failed", False)
            self.usage.record(client, request.get("model", "-"), prompt, completion, failed)
            route, status = request.match_info.route.resource.canonical, response.status if response is not None else 500
            seconds = time.monotonic() - request["started"]
            self.metrics.record(request, client, route, status, seconds)
            streamed = seconds - (request.get("first_byte_s") or 0.0)
            self.recent.append({"at": time.time(), "client": client, "model": request.get("model", "-"), "route": route,
                                "status": status, "seconds": seconds, "completion_tokens": completion,
                                # A stream's decode rate, from its first byte to its last (a whole answer has none).
                                "tok_s": completion / streamed if request.get("streamed") and completion > 1
                                and streamed > 0 else None})

    async def forward_counted(self, request):
        try:
            raw = await asyncio.wait_for(request.read(), connections.BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            return refused(self.web, request, 408, f"the body did not arrive within {connections.BODY_TIMEOUT_S:.0f} s")
        try:
            body = json.loads(raw)
        except ValueError:
            return self.json(400, error_body("the request body is not JSON", "invalid_request_error", 400))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self.json(400, error_body("the request names no model (\"model\")", "invalid_request_error", 400))
        shape = message_shape_problem(body)
        if shape:
            return refused(self.web, request, 400, shape)
        prepared = None  # a stream already begun while the model loaded
        name = find_model(self.models, body["model"])
        if name is None:
            known = ", ".join(f"{n} ({', '.join(m.get('aliases', []))})" if m.get("aliases") else n
                              for n, m in self.models.items())
            return self.json(404, error_body(f"no model {body['model']!r} on this host; it has: {known}",
                                             "model_not_found", 404))
        model = self.models[name]
        request["model"] = name
        if has_image(body) and (not model.get("vision") or model.get("language_model_only")):
            with_vision = self.vision_models()
            return self.json(400, error_body(
                f"model {name} takes no image input; " + (f"models with vision here: {', '.join(with_vision)}"
                                                           if with_vision else "no model here has vision"),
                "invalid_request_error", 400))
        if name in self.draining:
            # An on-demand swap waits for this model's requests to finish: it takes no new ones meanwhile.
            return self.unavailable(name, f"the door is swapping it out for {self.switching[0] if self.switching else 'another'}"
                                    "; its requests in flight finish first", 5)
        refusal, prepared = await self.ensure_hot(request, name, body)
        if refusal is not None:
            return refusal
        changed = body["model"] != model["served_model_name"]
        body["model"] = model["served_model_name"]
        body, fixed = apply_fixes(body, model.get("request_fixes") or [])
        data = json.dumps(body).encode() if (changed or fixed) else raw
        response = await self.proxy_counted(request, name, model, data, prepared)
        if request.pop("engine_refused", False) and prepared is None and self.config["on_demand"]:
            # The door's view was old: the model was stopped behind its back (llm-switch on the host, the guard);
            # its engine refused the connection, or closed a kept-alive one before answering.
            # On demand, that is a cold model like any other: load it and answer, rather than 503.
            await self.fresh(0)
            if self.states[name] != "hot":
                refusal, prepared = await self.ensure_hot(request, name, body)
                if refusal is not None:
                    return refusal
                response = await self.proxy_counted(request, name, model, data, prepared)
        return response

    async def ensure_hot(self, request, name, body):
        """(refusal or None, a stream begun while loading or None): the model hot, on demand, or why not."""
        if self.states[name] != "hot":
            await self.fresh()
        if self.states[name] == "hot":
            return None, None
        if not self.config["on_demand"]:
            return self.not_hot(name), None
        if self.waiting >= self.config["max_waiting"]:
            return self.unavailable(name, f"{self.waiting} requests already wait for a model to load, the "
                                    "door's most (sparkstack_frontdoor_max_waiting)", 10), None
        self.waiting += 1
        queued = time.monotonic()
        try:
            return await self.wait_for_load(request, name, bool(body.get("stream")))
        finally:
            self.waiting -= 1
            request["queued_s"] = time.monotonic() - queued

    async def proxy_counted(self, request, name, model, data, prepared):
        """The request to the engine, within the per-model cap, counted in flight while it runs."""
        if self.in_flight[name] >= self.config["max_requests_per_model"]:
            refusal = self.too_many(request, f"model {name} has {self.in_flight[name]} requests in flight, its most "
                                             "(sparkstack_frontdoor_max_requests_per_model)")
            if prepared is not None:
                request["failed"] = True
                await self.stream_error(prepared, name, refusal)
                return prepared
            return refusal
        self.in_flight[name] += 1
        self.last_used[name] = time.monotonic()
        try:
            response = await self.proxy(request, name, model, data, prepared)
            if prepared is not None and response is not prepared:
                # A refusal after the stream began (status 200 already sent): its body as the stream's error event.
                request["failed"] = True
                await self.stream_error(prepared, name, response)
                return prepared
            return response
        finally:
            self.in_flight[name] -= 1
            self.last_used[name] = time.monotonic()

    def too_many(self, request, why):
        response = refused(self.web, request, 429, f"{why}; retry shortly")
        response.headers["Retry-After"] = "1"
        return response

    async def wait_for_load(self, request, name, streaming):
        """(refusal or None, a begun stream or None): an on-demand switch, and for a streaming client that has to
        wait longer than LOADING_AFTER_S, an SSE stream begun at once with a comment every LOADING_COMMENT_S."""
        task = asyncio.ensure_future(self.switch_on_demand(name))
        if not streaming:
            return await task, None
        done, _ = await asyncio.wait({task}, timeout=LOADING_AFTER_S)
        if done:
            return task.result(), None  # refused or hot at once: the status says so, as without waiting
        response = self.web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        started = time.monotonic()
        target = self.target_for(name)
        what = name if target == name else f"set {target}"
        while not task.done():
            state = self.states.get(name, "unknown")
            try:
                await response.write(f": loading {what} ({state}; waited {time.monotonic() - started:.0f} s)\n\n".encode())
            except (ConnectionResetError, RuntimeError):
                # The client gave up waiting: the load goes on (another client may want it), this answer ends here.
                request["failed"] = True
                return response, None
            await asyncio.wait({task}, timeout=LOADING_COMMENT_S)
        refusal = task.result()
        if refusal is not None:
            request["failed"] = True
            await self.stream_error(response, name, refusal)
            return response, None
        return None, response

    async def stream_error(self, response, name, refusal):
        """A refusal's error, sent as the stream's last event (its status was sent as 200)."""
        try:
            error = json.loads(refusal.body)
        except (TypeError, ValueError):
            error = error_body(f"model {name}: the request failed ({refusal.status})", "error", refusal.status)
        print(f"sparkstack-frontdoor: {name}: a stream that waited for its load ends in an error ({refusal.status})",
              flush=True)
        try:
            await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass

    async def proxy(self, request, name, model, data, prepared=None):
        response = await self.proxy_once(request, name, model, data, prepared)
        if request.pop("closed_before_answer", False):
            # A kept-alive connection the engine closed meanwhile (uvicorn closes idle ones after 5 s), before it
            # read the request: once more, on a new connection.
            response = await self.proxy_once(request, name, model, data, prepared)
        return response

    async def proxy_once(self, request, name, model, data, prepared=None):
        headers = {"Content-Type": "application/json", **self.upstream_headers(model)}
        if "Accept" in request.headers:
            headers["Accept"] = request.headers["Accept"]
        timeout = self.client.ClientTimeout(total=None, sock_connect=self.config["connect_timeout_s"],
                                            sock_read=self.config["read_timeout_s"])
        # The matched route, never the request's path: nothing the client spells reaches another engine route.
        url = f"http://127.0.0.1:{model['port']}{request.match_info.route.resource.canonical}"
        try:
            async with self.session.post(url, data=data, headers=headers, timeout=timeout) as upstream:
                content_type = upstream.headers.get("Content-Type", "application/json")
                if not content_type.startswith("text/event-stream"):
                    request["first_byte_s"] = time.monotonic() - request["started"]
                    payload = await upstream.read()
                    self.wedge.progressed(name)
                    request["tokens"] = usage.tokens_of(payload) if upstream.status == 200 else (0, 0)
                    return self.web.Response(status=upstream.status, body=payload, content_type=content_type.split(";")[0])
                response = prepared
                if response is None:
                    response = self.web.StreamResponse(status=upstream.status, headers={
                        "Content-Type": content_type, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
                    await response.prepare(request)
                route = request.match_info.route.resource.canonical
                request["streamed"] = True
                tail = b""
                try:
                    # As it comes: each piece the engine sends is written on at once, never gathered.
                    async for piece in upstream.content.iter_any():
                        if "first_byte_s" not in request:
                            request["first_byte_s"] = time.monotonic() - request["started"]
                        self.wedge.progressed(name)
                        await response.write(piece)
                        tail = (tail + piece)[-4096:]  # room for the usage event before [DONE]
                except (ConnectionResetError, asyncio.CancelledError):
                    # The client went away: leaving this block closes the upstream connection, and the
                    # engine aborts the request when its socket closes.
                    upstream.close()
                    raise
                except (asyncio.TimeoutError, self.client.ClientError) as exc:
                    upstream.close()
                    request["failed"] = True
                    await self.stream_broke_off(response, name, type(exc).__name__)
                    return response
                request["tokens"] = usage.tokens_of(tail)
                if route in DONE_ROUTES and b"data: [DONE]" not in tail[-64:]:
                    request["failed"] = True
                    await self.stream_broke_off(response, name, "the engine closed the stream before [DONE]")
                    return response
                try:
                    await response.write_eof()
                except (ConnectionResetError, RuntimeError):
                    pass  # the client had all of it ([DONE]) and closed first: nothing is lost
                return response
        except self.client.ClientConnectorError as exc:
            self.wake.set()
            request["engine_refused"] = True
            return self.unavailable(name, f"its engine does not accept connections ({exc.os_error or exc})", 10)
        except (asyncio.TimeoutError, self.client.ServerTimeoutError):
            return self.json(504, error_body(f"model {name} did not answer within the door's read timeout "
                                             f"({self.config['read_timeout_s']} s)", "timeout", 504))
        except self.client.ClientError as exc:
            if isinstance(exc, self.client.ServerDisconnectedError) and not request.get("tried_again"):
                request["tried_again"] = request["closed_before_answer"] = True
            elif isinstance(exc, self.client.ServerDisconnectedError):
                # Twice, before any byte of an answer: an engine that has stopped since the door last looked.
                self.wake.set()
                request["engine_refused"] = True
            return self.json(502, error_body(f"model {name}: the engine broke the connection ({exc})", "bad_gateway", 502))

    async def stream_broke_off(self, response, name, why):
        """Mid-stream the status is already sent: an error event tells the client the answer is cut, so a
        broken stream never ends like a complete one (the openai client raises on an event with "error")."""
        print(f"sparkstack-frontdoor: {name}: the stream broke off ({why})", flush=True)
        event = error_body(f"model {name}: the stream broke off ({why}); the answer is incomplete", "stream_error", 502)
        try:
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass

    async def keep_usage(self):
        while True:
            await asyncio.sleep(usage.FLUSH_S)
            try:
                self.usage.flush()
            except Exception as exc:  # a full disk must not take the door down; the counts wait for the next try
                print(f"sparkstack-frontdoor: usage not written: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    async def start(self, app):
        self.session = self.client.ClientSession(connector=self.client.TCPConnector(limit=0), auto_decompress=False)
        await self.refresh()
        app["poller"] = asyncio.ensure_future(self.poll())
        app["usage"] = asyncio.ensure_future(self.keep_usage())
        app["wedge"] = asyncio.ensure_future(self.wedge.run())

    async def stop(self, app):
        app["poller"].cancel()
        app["usage"].cancel()
        app["wedge"].cancel()
        self.usage.flush()  # what was counted since the last write, before the door goes
        await self.session.close()


def local_addresses():
    """This host's own IPv4 and IPv6 addresses, from the kernel's tables (they change with DHCP: read again)."""
    found = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii") as handle:
            last = None
            for line in handle:
                words = line.split()
                if words[:1] == ["|--"]:
                    last = words[1]
                elif words[:3] == ["/32", "host", "LOCAL"] and last:
                    found.add(last)
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as handle:
            for line in handle:
                found.add(str(ipaddress.IPv6Address(int(line.split()[0], 16))))
    except (OSError, ValueError, IndexError):
        pass
    return found


def host_of(header):
    """The name in a Host header, lower-cased and without its port: "[::1]:30080" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class DoorNames:
    """The names a request may call the door by: loopback, this host's own names and addresses, and the names
    the owner lists (sparkstack_frontdoor_hostnames). Anything else is a page's DNS name rebound to this host."""
    REREAD_S = 5.0

    def __init__(self, listed, bind):
        hostname = socket.gethostname().lower()
        self.fixed = {"localhost", "127.0.0.1", "::1", bind, hostname, f"{hostname}.local", socket.getfqdn().lower()}
        self.fixed |= {name.lower() for name in listed}
        self.addresses, self.read_at = local_addresses(), time.monotonic()

    def allows(self, header):
        if header is None:  # HTTP/1.0 without Host: no browser sends that
            return True
        name = host_of(header)
        if name in self.fixed or name in self.addresses:
            return True
        if time.monotonic() - self.read_at > self.REREAD_S:
            self.addresses, self.read_at = local_addresses(), time.monotonic()
        return name in self.addresses


def refused(web, request, code, message):
    """One journal line per refused request (never a traceback), and an OpenAI-shaped error body."""
    path = request.raw_path[:200].encode("ascii", "backslashreplace").decode()
    print(f"sparkstack-frontdoor: refused {request.method} {path} from {request.remote}: {code} {message}", flush=True)
    kind = {400: "invalid_request_error", 403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
            408: "timeout", 413: "invalid_request_error", 415: "invalid_request_error",
            421: "invalid_request_error", 429: "rate_limit_error"}.get(code, "error")
    return web.json_response(error_body(message, kind, code), status=code)


def make_app(registry):
    import aiohttp  # the distribution's python3-aiohttp
    from aiohttp import web

    config = registry["frontdoor"]
    allowed_origins = frozenset(config.get("allowed_origins") or ())
    names = DoorNames(config.get("hostnames") or (), config["bind"])
    watch = connections.ConnectionWatch()

    @web.middleware
    async def only_listed_routes(request, handler):
        transport = request.transport
        watch.request_started(transport)
        try:
            return await checked(request, handler)
        finally:
            watch.request_finished(transport)

    async def checked(request, handler):
        if not names.allows(request.headers.get("Host")):
            # DNS rebinding: a page's own name, resolved to this host, reaching the door from the owner's browser.
            return refused(web, request, 421, f"the door does not answer to the name {request.host[:100]!r}; list it "
                                              "in sparkstack_frontdoor_hostnames to allow it")
        why = path_refusal(request.raw_path)
        if why:
            return refused(web, request, 400, f"{why}; the door serves only its listed routes")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in allowed_origins:
            # A web page in the owner's browser (or DNS rebinding) reaching the door: refused unless listed.
            return refused(web, request, 403, f"requests from the browser origin {origin[:100]!r} are refused; "
                                              "list it in sparkstack_frontdoor_allowed_origins to allow it")
        if request.method == "POST" and request.content_type != "application/json":
            # text/plain is what a page may POST cross-origin without asking: the door takes JSON only.
            return refused(web, request, 415, "the door takes request bodies as Content-Type: application/json")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return refused(web, request, 404, f"the door serves {', '.join(('/v1/models',) + FORWARDED_ROUTES)}, "
                                              "/version, /metrics, /status, /running, /unload and /health, nothing else")
        except web.HTTPMethodNotAllowed as exc:
            response = refused(web, request, 405, f"{request.path} takes {', '.join(sorted(exc.allowed_methods))}")
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response
        except web.HTTPRequestEntityTooLarge:
            return refused(web, request, 413, f"the body is larger than the door's {MAX_BODY_BYTES // 2**20} MiB")

    door = Door(registry, web, aiohttp)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[only_listed_routes])
    app["connections"] = watch
    app.router.add_get("/health", door.health)
    app.router.add_get("/v1/models", door.list_models)
    app.router.add_get("/version", door.version)
    app.router.add_get("/metrics", door.metrics_page)
    app.router.add_get("/status", door.status)
    app.router.add_get("/running", door.running)
    app.router.add_post("/unload", door.unload)
    for route in FORWARDED_ROUTES:
        app.router.add_post(route, door.forward)
    app.on_startup.append(door.start)
    app.on_cleanup.append(door.stop)
    return app


def tls_context(files):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files["cert"], files["key"])
    return context


async def serve(registry):
    from aiohttp import web

    config = registry["frontdoor"]
    app = make_app(registry)
    import aiohttp

    runner = web.AppRunner(app, access_log=None, **compat.aiohttp_runner_options(aiohttp.__version__))
    await runner.setup()
    # The listening socket is the door's own, so that every connection goes through its watch.
    watch = app["connections"]
    tls = tls_context(config["tls"]) if config.get("tls") else None
    await asyncio.get_running_loop().create_server(
        watch.protocol_factory(runner.server), config["bind"], config["port"], reuse_address=True, backlog=1024,
        ssl=tls, ssl_handshake_timeout=connections.HEADER_TIMEOUT_S if tls else None)

    print(f"sparkstack-frontdoor: listening on {config['bind']}:{config['port']}{' (TLS)' if tls else ''} for "
          f"{', '.join(registry['models'])} ({'switching on demand' if config['on_demand'] else '409 for a model not hot'})",
          flush=True)
    # systemd stops the door with SIGTERM: it cleans up (the usage counted since the last write is kept), then exits.
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    watching = asyncio.ensure_future(watch.run())  # as long as the door runs
    await asyncio.wait({watching, asyncio.ensure_future(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED)
    watching.cancel()
    await runner.cleanup()


def print_usage(clients, as_json):
    if as_json:
        print(json.dumps(clients, indent=2, sort_keys=True))
        return
    if not clients:
        print("no request has been counted yet")
        return
    print(f"{'CLIENT':<16}{'REQUESTS':>10}{'PROMPT':>12}{'COMPLETION':>12}{'ERRORS':>8}  LAST")
    for name, entry in clients.items():
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["last_at"]))
        print(f"{name:<16}{entry['requests']:>10}{entry['prompt_tokens']:>12}{entry['completion_tokens']:>12}"
              f"{entry['errors']:>8}  {last}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sparkstack-frontdoor", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("serve", "usage"), default="serve",
                        help="serve (what its unit runs), or usage: the requests and tokens counted per client key")
    parser.add_argument("--registry", default=REGISTRY)
    parser.add_argument("--json", action="store_true", help="usage as JSON")
    args = parser.parse_args(argv)
    try:
        registry = contract.read_registry(args.registry)
    except contract.RegistryError as exc:
        sys.exit(f"sparkstack-frontdoor: {exc}")
    if "frontdoor" not in registry:
        sys.exit(f"sparkstack-frontdoor: {args.registry} has no frontdoor settings; deploy again")
    if args.command == "usage":
        print_usage(usage.read_usage(registry["frontdoor"]["usage_db"]), args.json)
        return
    if registry["frontdoor"].get("api_key_env") and not os.environ.get(registry["frontdoor"]["api_key_env"]):
        sys.exit(f"sparkstack-frontdoor: the door is exposed but {registry['frontdoor']['api_key_env']} is not set "
                 f"(it comes from {registry['secrets_file']})")
    try:
        asyncio.run(serve(registry))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
