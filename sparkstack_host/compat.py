"""Where the host's platform changes what this package must do: each difference once, with its version check.

The tests prove the package on Debian 12 (aiohttp 3.8, Python 3.11, systemd 252) and Debian 13 (aiohttp 3.11,
Python 3.13, systemd 257), which bracket DGX OS 7 (aiohttp 3.9, Python 3.12, systemd 255). tests/unit/test_compat.py
checks each function on both sides of its line.
"""


def version_tuple(version):
    """'3.11.16' -> (3, 11); a suffix such as 'rc1' on the minor is dropped."""
    major, _, rest = version.partition(".")
    minor = rest.split(".")[0]
    digits = minor[:len(minor) - len(minor.lstrip("0123456789"))]
    return int(major), int(digits or 0)


def aiohttp_runner_options(aiohttp_version):
    """aiohttp 3.9 made cancelling the handler of a client that went away opt-in (3.8 always does it, and an
    unknown keyword would fail only per connection, so the door asks by version)."""
    return {"handler_cancellation": True} if version_tuple(aiohttp_version) >= (3, 9) else {}
