"""Where the kit's own files live, and how paths are shown to the user.

Profiles, group data, templates and host files come from the sparkstack checkout you stand in
(the working directory or one of its parents), as pyinfra reads inventory.py and deploy.py from
the working directory, and never from the checkout the package happens to be installed from.
SPARKSTACK_ROOT names the checkout explicitly; SPARKSTACK_MODELS_DIR points every command at
another set of profiles (used by the tests).
"""

from __future__ import annotations

import os
from pathlib import Path

# What makes a directory a sparkstack checkout.
MARKERS = ("deploy.py", "inventory.py", "group_data/models")


class NotARepo(Exception):
    pass


def _is_repo(path: Path) -> bool:
    return all((path / marker).exists() for marker in MARKERS)


def repo_root() -> Path:
    explicit = os.environ.get("SPARKSTACK_ROOT")
    if explicit:
        root = Path(explicit).resolve()
        if not _is_repo(root):
            raise NotARepo(f"SPARKSTACK_ROOT={explicit} is not a sparkstack checkout "
                           f"(it must hold {', '.join(MARKERS)})")
        return root
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if _is_repo(candidate):
            return candidate
    raise NotARepo(f"{here} is not inside a sparkstack checkout: neither it nor a parent holds "
                   f"{', '.join(MARKERS)}; run sparkstack (and pyinfra) from your checkout, or set SPARKSTACK_ROOT")


def group_data_dir() -> Path:
    return repo_root() / "group_data"


def models_dir() -> Path:
    override = os.environ.get("SPARKSTACK_MODELS_DIR")
    return Path(override) if override else group_data_dir() / "models"


def templates_dir() -> Path:
    return repo_root() / "templates"


def files_dir() -> Path:
    return repo_root() / "files"


def display_path(path: Path) -> str:
    """A path relative to the working directory when it is below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
