"""The kit and the host package share one contract (sparkstack_host/contract.py): what render writes is what the
host programs read, and the host package stays within its import rule."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from sparkstack.paths import files_dir, repo_root
from sparkstack_host import contract
from tests.unit.test_render import rendering_for

PACKAGE = repo_root() / "sparkstack_host"
# The door may use the distribution's aiohttp; nothing else outside the standard library.
ALLOWED_OUTSIDE_STDLIB = {"frontdoor.py": {"aiohttp"}, "door_metrics.py": {"prometheus_client"}}


@pytest.mark.parametrize("group", ["spark", "testhost"])
def test_the_rendered_registry_has_exactly_the_contracts_keys_and_format(group, tmp_path):
    files = {f.kind: f for f in rendering_for(group, pinned=False).files}
    path = tmp_path / "models.json"
    path.write_text(files["registry"].content)
    registry = contract.read_registry(str(path))
    assert registry["format"] == contract.REGISTRY_FORMAT
    assert set(registry) == contract.REGISTRY_KEYS
    assert set(registry["frontdoor"]) == contract.FRONTDOOR_KEYS
    for name, model in registry["models"].items():
        assert set(model) == contract.MODEL_KEYS, name


def test_every_key_a_host_program_reads_from_a_model_entry_is_in_the_contract():
    read = set()
    for module in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "model"
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
                read.add(node.slice.value)
    assert read, "the walk found no reads: the test itself is broken"
    assert read <= contract.MODEL_KEYS, read - contract.MODEL_KEYS


@pytest.mark.parametrize("content,why", [
    ('{"models": {}}', "format None"),
    ('{"format": 0, "models": {}}', "format 0"),
    ("{not json", "not valid JSON"),
])
def test_a_registry_of_another_format_is_refused_with_what_to_do(tmp_path, content, why):
    path = tmp_path / "models.json"
    path.write_text(content)
    with pytest.raises(contract.RegistryError, match=why) as caught:
        contract.read_registry(str(path))
    assert "run the sparkstack deploy for this host" in str(caught.value)


def test_a_missing_registry_says_to_deploy(tmp_path):
    with pytest.raises(contract.RegistryError, match="is missing; run the sparkstack deploy"):
        contract.read_registry(str(tmp_path / "absent.json"))


def test_the_host_package_imports_only_the_standard_library_and_itself():
    stdlib = set(sys.stdlib_module_names)
    offenders = []
    for module in sorted(PACKAGE.glob("*.py")):
        allowed = stdlib | {"sparkstack_host"} | ALLOWED_OUTSIDE_STDLIB.get(module.name, set())
        for node in ast.walk(ast.parse(module.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{module.name}: {name}" for name in names if name.split(".")[0] not in allowed]
    assert not offenders, offenders


def test_the_shims_only_run_the_package():
    for shim in ("llm-switch", "sparkstack-cluster", "sparkstack-memguard", "sparkstack-fetch", "sparkstack-frontdoor"):
        text = (files_dir() / shim).read_text()
        assert len(text.splitlines()) <= 15, shim
        assert "from sparkstack_host." in text and contract.HOST_LIB in text, shim


def test_render_ships_every_module_of_the_package_byte_for_byte():
    shipped = {f.path: f.content for f in rendering_for("spark", pinned=False).files if f.component == "host-package"}
    expected = {f"{contract.HOST_LIB}/sparkstack_host/{m.name}": m.read_text() for m in PACKAGE.glob("*.py")}
    assert shipped == expected


def test_the_kits_paths_are_the_contracts():
    from sparkstack import render

    for name in ("REGISTRY_PATH", "SECRETS_PATH", "SWITCH_PATH", "MEMGUARD_PATH", "CLUSTER_PATH", "FRONTDOOR_PATH"):
        assert getattr(render, name) is getattr(contract, name), name
