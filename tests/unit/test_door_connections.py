"""The door's connection bounds (sparkstack_host/connections.py) on a fake clock: which connection is cut, when,
and for what. The door process tests (test_frontdoor_process.py) attack the real thing over sockets."""

from __future__ import annotations

import pytest

from sparkstack_host import connections
from sparkstack_host.connections import (HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, WRITE_TIMEOUT_S, ConnectionWatch,
                                         Watched)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Transport:
    def __init__(self, name):
        self.name, self.aborted = name, False

    def abort(self):
        self.aborted = True

    def __repr__(self):
        return self.name


class Handler:
    """aiohttp's per-connection handler as the wrapper sees it: every call it gets, in order."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *args))


@pytest.fixture
def clock():
    return Clock()


def test_a_client_that_never_finishes_its_headers_is_cut_after_the_header_timeout(clock):
    watch = ConnectionWatch(clock)
    slow = Transport("slowloris")
    watch.opened(slow)
    clock.now += HEADER_TIMEOUT_S - 0.5
    assert watch.sweep() == 0 and not slow.aborted
    clock.now += 1
    assert watch.sweep() == 1 and slow.aborted
    assert watch.cut["header"] == 1 and slow not in watch.open


def test_a_request_being_answered_is_never_cut_however_long_it_takes(clock):
    watch = ConnectionWatch(clock)
    long_answer = Transport("a 20-minute prefill")
    watch.opened(long_answer)
    watch.request_started(long_answer)
    clock.now += 1200
    assert watch.sweep() == 0 and not long_answer.aborted


def test_a_kept_alive_connection_gets_the_idle_timeout_after_its_answer(clock):
    watch = ConnectionWatch(clock)
    client = Transport("keep-alive")
    watch.opened(client)
    watch.request_started(client)
    clock.now += 100
    watch.request_finished(client)
    clock.now += IDLE_TIMEOUT_S - 1
    assert watch.sweep() == 0
    clock.now += 2
    assert watch.sweep() == 1 and watch.cut["idle"] == 1


def test_a_client_that_stops_reading_its_answer_is_cut_after_the_write_timeout(clock):
    watch = ConnectionWatch(clock)
    reader = Transport("reads a little, then nothing")
    watch.opened(reader)
    watch.request_started(reader)
    watch.write_blocked(reader)
    clock.now += WRITE_TIMEOUT_S / 2
    watch.write_unblocked(reader)  # it read some: the clock starts again at the next block
    watch.write_blocked(reader)
    clock.now += WRITE_TIMEOUT_S - 1
    assert watch.sweep() == 0
    clock.now += 2
    assert watch.sweep() == 1 and watch.cut["write"] == 1


def test_at_the_cap_the_oldest_waiting_connection_makes_room_and_answered_ones_stay(clock):
    watch = ConnectionWatch(clock, max_connections=3)
    answered, old_waiting, new_waiting = Transport("answered"), Transport("old"), Transport("new")
    for transport in (answered, old_waiting, new_waiting):
        watch.opened(transport)
        clock.now += 1
    watch.request_started(answered)
    newcomer = Transport("newcomer")
    watch.opened(newcomer)
    assert old_waiting.aborted and not answered.aborted and not new_waiting.aborted and not newcomer.aborted
    assert watch.cut["crowded"] == 1 and len(watch.open) == 3


def test_at_the_cap_with_every_connection_answered_the_newcomer_is_the_one_refused(clock):
    watch = ConnectionWatch(clock, max_connections=1)
    answered = Transport("answered")
    watch.opened(answered)
    watch.request_started(answered)
    newcomer = Transport("newcomer")
    watch.opened(newcomer)
    assert newcomer.aborted and not answered.aborted


def test_the_wrapper_passes_every_call_on_and_tells_the_watch(clock):
    watch = ConnectionWatch(clock)
    handler = Handler()
    protocol = watch.protocol_factory(lambda: handler)()
    assert isinstance(protocol, Watched)
    transport = Transport("t")
    protocol.connection_made(transport)
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    protocol.pause_writing()
    assert watch.open[transport][3] == clock.now
    protocol.resume_writing()
    protocol.eof_received()
    protocol.connection_lost(None)
    assert [call[0] for call in handler.calls] == ["connection_made", "data_received", "pause_writing",
                                                   "resume_writing", "eof_received", "connection_lost"]
    assert transport not in watch.open


def test_the_summary_line_names_each_kind_of_cut(clock, capsys):
    watch = ConnectionWatch(clock)
    for name in ("a", "b"):
        watch.opened(Transport(name))
    clock.now += HEADER_TIMEOUT_S + 1
    watch.sweep()
    watch.report()
    assert capsys.readouterr().out == ("sparkstack-frontdoor: cut 2 connections so far (headers not sent within "
                                       f"{HEADER_TIMEOUT_S:.0f} s: 2, idle: 0, not reading: 0, crowded out: 0)\n")
    watch.report()  # nothing new: no line
    assert capsys.readouterr().out == ""


def test_the_bounds_fit_under_the_units_file_limit():
    unit = (connections.__file__.rsplit("/", 2)[0] + "/templates/frontdoor.service.j2")
    limit = int(next(line.split("=", 1)[1] for line in open(unit) if line.startswith("LimitNOFILE=")))
    # Each connection the door holds may have one engine connection behind it.
    assert 2 * connections.MAX_CONNECTIONS + 64 < limit
