"""Host checks: testinfra against any inventory host, the test VM in CI or a Spark by hand.

    sparkstack testhost ssh-config > build/testhost.ssh
    pytest tests/host --hosts=ssh://sparkstack-testhost --ssh-config=build/testhost.ssh

    # a real Spark (group spark), as root or with sudo:
    SPARKSTACK_GROUP=spark pytest tests/host --hosts=ssh://spark-1 --sudo

    # one node of a cluster group: SPARKSTACK_NODE is its inventory name (its rank's files differ)
    SPARKSTACK_GROUP=cluster SPARKSTACK_NODE=spark-2 pytest tests/host --hosts=ssh://spark-2 --sudo

What the host should hold is computed by the same code the deploy uses
(profiles -> memory plan -> render), so the checks read the host as it is and
compare it with what sparkstack means it to be.
"""

from __future__ import annotations

import os

import pytest

from sparkstack.groups import load_group_settings
from sparkstack.lockfile import group_pins, load_lock
from sparkstack.memory import make_plan
from sparkstack.profiles import load_profiles
from sparkstack.render import render

GROUP = os.environ.get("SPARKSTACK_GROUP", "testhost")
_LOADED = load_profiles()
_SETTINGS = SETTINGS = load_group_settings(GROUP)
_PLAN = make_plan(GROUP, [lp.profile for lp in _LOADED], _SETTINGS)
# The group's lock pins what the deploy rendered (the test VM's is written by the tests).
PINS = group_pins(GROUP, _PLAN.deployable, _SETTINGS)
LOCK = load_lock(GROUP)
NODE = os.environ.get("SPARKSTACK_NODE")
RENDERING = render(GROUP, _LOADED, _SETTINGS, _PLAN, PINS, NODE)
DEPLOYED = {p.name: p for p in _PLAN.deployable}


def pytest_generate_tests(metafunc):
    if "profile" in metafunc.fixturenames:
        names = sorted(DEPLOYED)
        metafunc.parametrize("profile", [DEPLOYED[n] for n in names], ids=names)
    if "locked_repo" in metafunc.fixturenames:
        repos = sorted(PINS.revisions)
        metafunc.parametrize("locked_repo", repos, ids=repos)
    if "rendered" in metafunc.fixturenames:
        metafunc.parametrize("rendered", RENDERING.files, ids=[f.path for f in RENDERING.files])


@pytest.fixture(scope="session")
def rendering():
    return RENDERING


@pytest.fixture(scope="session")
def settings():
    return _SETTINGS


@pytest.fixture(scope="session")
def pins():
    return PINS


@pytest.fixture(scope="session")
def lock():
    return LOCK
