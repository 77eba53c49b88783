"""Shared helpers: copies of the shipped profiles to mutate, and rendered trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from sparkstack.paths import models_dir


@pytest.fixture
def profiles_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped profiles."""
    target = tmp_path / "models"
    shutil.copytree(models_dir(), target)
    return target


def edit_profile(directory: Path, name: str, change) -> Path:
    """Load a profile copy, let `change(data)` mutate it, write it back."""
    path = directory / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
