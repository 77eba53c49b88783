"""Per-group settings: read from group_data/*.py, the same files pyinfra loads.

`sparkstack render --group G` has no host to ask, so it runs group_data/all.py
and group_data/G.py exactly as pyinfra does (later files override earlier ones)
and keeps the `sparkstack_*` names. During a deploy the same values come from
`host.data`. Both paths end in `GroupSettings`, so render and deploy agree.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparkstack.paths import GROUP_DATA_DIR, display_path

PREFIX = "sparkstack_"
# A DGX Spark has 128 GB of unified memory (NVIDIA; seeds 000/001). Used when
# planning without a live host; a deploy reads the host's own figure.
SPARK_UNIFIED_MEMORY_GB = 128.0


class GroupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    unified_memory_gb: float | None = Field(default=None, gt=0)
    os_reserve_gb: float = Field(default=8.0, ge=0)
    expose: bool = False
    gpus: bool = True
    drop_caches: bool = False
    models: list[str] | None = None
    image_overrides: dict[str, str] = {}
    model_cache_dir: str = "/var/lib/sparkstack/huggingface"
    switch_lock_wait_s: int = Field(default=120, gt=0)
    memory_settle_timeout_s: int = Field(default=180, ge=0)
    # What the memory gate compares MemAvailable against; 1.0 on a Spark.
    switch_memory_scale: float = Field(default=1.0, gt=0, le=1)

    def planning_memory_gb(self, live_gb: float | None = None) -> float:
        if self.unified_memory_gb is not None:
            return self.unified_memory_gb
        return live_gb if live_gb is not None else SPARK_UNIFIED_MEMORY_GB


class GroupSettingsError(Exception):
    pass


def settings_from_data(data: Mapping[str, Any], source: str) -> GroupSettings:
    values = {k[len(PREFIX):]: v for k, v in data.items() if k.startswith(PREFIX)}
    try:
        return GroupSettings.model_validate(values)
    except ValidationError as exc:
        lines = [f"{source}: {PREFIX}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise GroupSettingsError("\n".join(lines)) from None


def group_data_files(group: str, root: Path = GROUP_DATA_DIR) -> list[Path]:
    files = [root / "all.py", root / f"{group}.py"]
    return [f for f in files if f.is_file()]


def load_group_settings(group: str, root: Path = GROUP_DATA_DIR) -> GroupSettings:
    if not (root / f"{group}.py").is_file():
        known = sorted(p.stem for p in root.glob("*.py") if p.stem != "all")
        raise GroupSettingsError(f"unknown group {group!r}: no {display_path(root / (group + '.py'))} (known: {', '.join(known)})")
    data: dict[str, Any] = {}
    for path in group_data_files(group, root):
        data.update({k: v for k, v in runpy.run_path(str(path)).items() if not k.startswith("_")})
    return settings_from_data(data, " + ".join(display_path(p) for p in group_data_files(group, root)))
