"""What one client connection may hold of the front door: the bounds aiohttp's server does not set itself.

aiohttp (3.8 on Debian 12, 3.11 on Debian 13) waits for a request's headers as long as the client likes, and
for a client that reads nothing of its answer; 1,100 half-open connections took the door down. Here each
connection has a deadline while no request of it is being answered (its headers must arrive within
HEADER_TIMEOUT_S of connecting, the next request within IDLE_TIMEOUT_S of the last answer), an answer whose
writes stay blocked for WRITE_TIMEOUT_S is cut off, and at MAX_CONNECTIONS the oldest connection that is not
being answered makes room for a new one. The door reads a body within BODY_TIMEOUT_S or answers 408.

Stdlib only: a protocol that wraps aiohttp's per-connection handler and passes every call on.
"""

import asyncio
import time

HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
WRITE_TIMEOUT_S = 60.0
# The whole body, once the headers are in: the door's largest body (frontdoor.MAX_BODY_BYTES) at about 1 MB/s.
BODY_TIMEOUT_S = 60.0
# Plenty for the laptops of one home or office; far under the unit's LimitNOFILE=65536, with room for the
# engine connection behind each request.
MAX_CONNECTIONS = 1024
SWEEP_S = 1.0


class Watched(asyncio.Protocol):
    """aiohttp's handler for one connection, with the watch told when it opens, closes and stalls."""

    def __init__(self, inner, watch):
        self.inner, self.watch, self.transport = inner, watch, None

    def connection_made(self, transport):
        self.transport = transport
        self.watch.opened(transport)
        self.inner.connection_made(transport)

    def connection_lost(self, exc):
        self.watch.closed(self.transport)
        self.inner.connection_lost(exc)

    def data_received(self, data):
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self):
        self.watch.write_blocked(self.transport)
        self.inner.pause_writing()

    def resume_writing(self):
        self.watch.write_unblocked(self.transport)
        self.inner.resume_writing()


class ConnectionWatch:
    def __init__(self, clock=time.monotonic, max_connections=MAX_CONNECTIONS):
        self.clock, self.max_connections = clock, max_connections
        # transport -> [opened at, deadline while no request is being answered (None during one),
        #               what the deadline waits for ("header" or "idle"), writes blocked since]
        self.open = {}
        self.cut = {"header": 0, "idle": 0, "write": 0, "crowded": 0}
        self.reported = 0

    def protocol_factory(self, make_handler):
        return lambda: Watched(make_handler(), self)

    # - events ---------------------------------------------------------------------------------------
    def opened(self, transport):
        now = self.clock()
        self.open[transport] = [now, now + HEADER_TIMEOUT_S, "header", None]
        if len(self.open) > self.max_connections:
            waiting = [(state[0], t) for t, state in self.open.items() if state[1] is not None and t is not transport]
            victim = min(waiting, key=lambda pair: pair[0])[1] if waiting else transport
            self.drop(victim, "crowded")

    def closed(self, transport):
        self.open.pop(transport, None)

    def request_started(self, transport):
        state = self.open.get(transport)
        if state:
            state[1] = None

    def request_finished(self, transport):
        state = self.open.get(transport)
        if state:
            state[1:3] = [self.clock() + IDLE_TIMEOUT_S, "idle"]

    def write_blocked(self, transport):
        state = self.open.get(transport)
        if state and state[3] is None:
            state[3] = self.clock()

    def write_unblocked(self, transport):
        state = self.open.get(transport)
        if state:
            state[3] = None

    # - enforcement ----------------------------------------------------------------------------------
    def drop(self, transport, why):
        self.cut[why] += 1
        self.open.pop(transport, None)
        transport.abort()

    def sweep(self):
        """Cut every connection past its bound; returns how many."""
        now, expired = self.clock(), []
        for transport, (_, deadline, waits_for, blocked) in self.open.items():
            if deadline is not None and now > deadline:
                expired.append((transport, waits_for))
            elif blocked is not None and now - blocked > WRITE_TIMEOUT_S:
                expired.append((transport, "write"))
        for transport, why in expired:
            self.drop(transport, why)
        return len(expired)

    def report(self):
        """One journal line when connections were cut since the last one: a flood is a line, not a line each."""
        total = sum(self.cut.values())
        if total != self.reported:
            self.reported = total
            print(f"sparkstack-frontdoor: cut {total} connections so far (headers not sent within "
                  f"{HEADER_TIMEOUT_S:.0f} s: {self.cut['header']}, idle: {self.cut['idle']}, "
                  f"not reading: {self.cut['write']}, crowded out: {self.cut['crowded']})", flush=True)

    async def run(self):
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep()
            self.report()
