"""The wedge watch: the door's test of whether a hot model still generates.

An engine can keep answering /health with 200 while it generates nothing (eugr#260, KServe#3845), so /health is not
the test. The door sees every byte its engines send. Once a second, for each hot model:
  * requests in flight and no byte of any answer for `stall_s`, or
  * no request and no byte for `canary_every_s`
send a canary: a streamed chat completion of at most `canary_max_tokens` tokens, straight to the engine. Any chunk
of it is a token. None within `canary_timeout_s`: the model is wedged, and the door asks root's switch socket to
recover it (`wedged NAME`). llm-switch decides, with its own bound: a restart, up to max_restarts_per_hour within
an hour, then a stop; it keeps the state, the reason and the last log lines in WEDGE_STATE
(sparkstack_host/contract.py), which status, the status page and /metrics read.

Settings: the registry's "wedge" (group settings sparkstack_wedge_*; 0 turns a trigger off).
"""

import asyncio
import time

from sparkstack_host import contract

CANARY_PROMPT = "Reply with the word OK."


class WedgeWatch:
    def __init__(self, door, settings):
        self.door = door
        self.settings = settings or {}
        self.progress_at = {}  # model -> when its engine last sent a byte of an answer (monotonic)
        self.checking = set()  # models with a canary out
        self.tasks = set()  # the checks under way, cancelled when the door stops
        self.recovering = set()  # models the switch is recovering
        # The models watched: hot ones, and those seen hot that stopped answering the door's look while their unit
        # runs on from the same start (a frozen engine answers nothing at all). A model's quiet time starts when the
        # door first sees it hot.
        self.watched = {}  # model -> the unit start it was hot in

    def enabled(self):
        return contract.wedge_watch_on(self.settings)

    def progressed(self, name):
        self.progress_at[name] = time.monotonic()

    def quiet_for(self, name):
        """Seconds since the model last showed progress: a byte of an answer, a canary's token, or the door seeing it
        hot."""
        now = time.monotonic()
        return now - self.progress_at.get(name, now)

    def due(self, name):
        """Why a canary is due for `name` now, or None."""
        busy = self.door.in_flight.get(name, 0)
        quiet = self.quiet_for(name)
        limit = self.settings.get("stall_s") if busy else self.settings.get("canary_every_s")
        if not limit or quiet < limit:
            return None
        if busy:
            return f"{busy} request(s) in flight and no byte of an answer for {quiet:.0f} s"
        return f"idle for {quiet:.0f} s"

    async def run(self):
        try:
            while True:
                await asyncio.sleep(1)
                try:
                    self.tick()
                except Exception as exc:  # the watch must not take the door down
                    print(f"sparkstack-frontdoor: wedge watch: {type(exc).__name__}: {exc}", flush=True)
        finally:
            for task in list(self.tasks):
                task.cancel()

    def tick(self):
        if not self.enabled():
            return
        door = self.door
        watched = {}
        for name, state in door.states.items():
            entered = door.unit_entered.get(name, 0)
            if state == "hot":
                if self.watched.get(name) != entered:
                    self.progressed(name)
                watched[name] = entered
            elif state == "loading" and name in self.watched and self.watched[name] == entered:
                watched[name] = entered  # it was hot in this very start, and no longer answers
        self.watched = watched
        busy_elsewhere = door.door_switching or (door.switching is not None and not door.switching[1].done())
        for name in watched:
            if name in self.checking or name in self.recovering or name in door.draining or busy_elsewhere:
                continue
            why = self.due(name)
            if why:
                self.checking.add(name)
                task = asyncio.ensure_future(self.check(name, why))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def check(self, name, why):
        try:
            ok, detail = await self.canary(name)
            if ok is None:
                self.door.wake.set()  # its engine is gone (stopped meanwhile): the door's next look says so
                return
            self.door.metrics.canary(name, "token" if ok else "none")
            if ok:
                self.progressed(name)
                return
            if name not in self.watched:
                return  # stopped or started again meanwhile: nothing to recover
            await self.recover(name, f"{why}; a canary got no token in {self.settings['canary_timeout_s']:g} s ({detail})")
        finally:
            self.checking.discard(name)

    async def canary(self, name):
        """(True, "") once the engine streams a chunk of a small completion; (False, why) otherwise; (None, why)
        when nothing listens on its port any more (a stopped engine is not a wedged one)."""
        try:
            return await asyncio.wait_for(self.ask(name), self.settings["canary_timeout_s"])
        except asyncio.TimeoutError:
            return False, "no chunk"
        except (self.door.client.ClientConnectorError, self.door.client.ServerDisconnectedError,
                ConnectionResetError) as exc:
            # Refused or closed before an answer: an engine going away (docker's proxy still accepts), not one that
            # holds a request and generates nothing.
            return None, str(exc)
        except self.door.client.ClientError as exc:
            return False, f"{type(exc).__name__}: {exc}"

    async def ask(self, name):
        door = self.door
        model = door.models[name]
        body = {"model": model["served_model_name"], "messages": [{"role": "user", "content": CANARY_PROMPT}],
                "max_tokens": self.settings["canary_max_tokens"], "stream": True, "temperature": 0}
        headers = {"Content-Type": "application/json", **door.upstream_headers(model)}
        async with door.session.post(f"http://127.0.0.1:{model['port']}/v1/chat/completions", json=body,
                                     headers=headers) as response:
            if response.status >= 500:
                return False, f"HTTP {response.status}"  # vLLM answers 500 once its EngineCore is dead
            if response.status != 200:
                return True, ""  # it answered: a refusal of the canary is not a wedge
            async for line in response.content:
                if line.startswith(b"data: {") and b'"choices"' in line:
                    return True, ""
            return False, "the stream ended without a token"

    async def recover(self, name, reason):
        door = self.door
        self.recovering.add(name)
        print(f"sparkstack-frontdoor: {name} is wedged: {reason}; asking llm-switch to recover it", flush=True)
        before = door.hot()
        try:
            try:
                # With the unit's start it was watched in: a report about an earlier start is refused by the switch.
                ok, message = await door.switch(f"wedged {name} {int(round(self.watched.get(name, 0) * 1e6))}", reason)
            except OSError as exc:
                ok, message = False, f"the switch socket does not answer ({exc})"
            door.wake.set()
            await door.fresh(0)
            print(f"sparkstack-frontdoor: {name}: {message}", flush=True)
            if door.hot() != before:
                door.log_switch(before, door.hot(), f"wedged: {message}")
        finally:
            self.progressed(name)  # a restarted engine starts its quiet time afresh
            self.recovering.discard(name)

