"""Each platform difference in sparkstack_host/compat.py, on both sides of its version line."""

import pytest

from sparkstack_host import compat


@pytest.mark.parametrize("version,expected", [
    ("3.8.4", {}),                                   # Debian 12
    ("3.9.1", {"handler_cancellation": True}),       # Ubuntu 24.04 (DGX OS 7)
    ("3.11.16", {"handler_cancellation": True}),     # Debian 13
    ("4.0.0a1", {"handler_cancellation": True}),
])
def test_the_door_asks_aiohttp_to_cancel_a_gone_clients_handler_only_where_it_must(version, expected):
    assert compat.aiohttp_runner_options(version) == expected


@pytest.mark.parametrize("version,expected", [("3.8.4", (3, 8)), ("3.10rc1", (3, 10)), ("3", (3, 0))])
def test_versions_compare_by_major_and_minor(version, expected):
    assert compat.version_tuple(version) == expected
