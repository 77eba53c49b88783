"""Settings every sparkstack host group shares; a group's own file overrides them.

pyinfra loads this file as group data; `sparkstack render/plan` loads it the same way.
Every setting is a `sparkstack_<name>` variable; the names, types and defaults (with
where each default comes from) are `GroupSettings` in sparkstack/groups.py, the one
place they are defined. Set here only what should differ for all groups, e.g.

    sparkstack_os_reserve_gb = 12.0

The model profiles live in group_data/models/*.yaml and are read by sparkstack itself
(pyinfra's group data loader only reads *.py).
"""
