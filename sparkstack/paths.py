"""Where the kit's own files live, and how paths are shown to the user."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("SPARKSTACK_ROOT", Path(__file__).resolve().parent.parent))
GROUP_DATA_DIR = REPO_ROOT / "group_data"
# SPARKSTACK_MODELS_DIR points every command at another set of profiles (used by the drift tests).
MODELS_DIR = Path(os.environ.get("SPARKSTACK_MODELS_DIR", GROUP_DATA_DIR / "models"))
TEMPLATES_DIR = REPO_ROOT / "templates"
FILES_DIR = REPO_ROOT / "files"


def display_path(path: Path) -> str:
    """A path relative to the working directory when it is below it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
