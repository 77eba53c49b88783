"""Engine releases: ask each pinned image which engine release it carries and what it accepts.

The probe (sparkstack/engines/probes/) runs inside the image once per image id and is cached on
the host (sparkstack/engines/host.py); the same check as `sparkstack validate` then runs against
its answer. Refusals come before any file changes.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import DeployError, deploy
from pyinfra.operations import python

from sparkstack.engines.host import EngineProbe, read_answer
from sparkstack.engines.release import admits
from sparkstack.groups import GroupSettings
from sparkstack.profiles import Profile, release_findings
from sparkstack.render import GPU_FLAGS

@deploy("sparkstack engine releases")
def check_engine_releases(profiles: list[Profile], settings: GroupSettings, images: dict[str, str], pulled: set[str]) -> None:
    """Ask each pinned image which engine release it carries and what it accepts; refuse a release outside the
    profile's engine_version or anything it would refuse or ignore. `images` maps profile name -> pinned image.
    Images on the host now are asked at once, before anything changes; an image this deploy pulls is asked
    by an operation right after its pull, before any snapshot is fetched or file is written."""
    gpu_flags = tuple(GPU_FLAGS) if settings.gpus else ()
    now = [p for p in profiles if images[p.name] not in pulled]
    later = [p for p in profiles if images[p.name] in pulled]
    problems = _problems(now, images, gpu_flags)
    if problems:
        raise DeployError(_refusal(problems, "nothing was changed"))
    if later:
        python.call(name=f"Ask the pulled image(s) which engine release they carry: {', '.join(p.name for p in later)}",
                    function=_check_after_pull, profiles=later, images=images, gpu_flags=gpu_flags)


def _check_after_pull(profiles: list[Profile], images: dict[str, str], gpu_flags: tuple[str, ...]) -> None:
    problems = _problems(profiles, images, gpu_flags)
    if problems:
        raise DeployError(_refusal(problems, "the image was pulled, no model file was changed"))


def _refusal(problems: list[str], outcome: str) -> str:
    return (f"{host.name}: the engine in the pinned image refuses or ignores what sparkstack would render; {outcome}:\n"
            + "\n".join(f"  {line}" for line in problems))


def _problems(profiles: list[Profile], images: dict[str, str], gpu_flags: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    for profile in profiles:
        image = images[profile.name]
        output = host.get_fact(EngineProbe, engine=profile.engine, image=image, gpu_flags=gpu_flags)
        answer = read_answer(profile.engine, image, output)
        if answer.release is None:
            problems.append(f"{profile.name}: {answer.problem}")
            continue
        release = answer.release
        if not admits(profile.engine_version, release.version):
            problems.append(f"{profile.name}: engine_version: image {image} carries {release.label}, but the profile "
                            f"declares {profile.engine_version!r}; declare the release the image carries (and snapshot "
                            "it with tools/snapshot_engine.py) or pin the image that carries the declared one")
            continue
        if profile.cluster and profile.cluster.backend == "ray" and release.ray_version == "":
            problems.append(f"{profile.name}: cluster.backend: ray, but image {image} carries no Ray (vLLM images since "
                            "0.18 do not ship it); pin an image with Ray in it, or use backend: native")
            continue
        found = release_findings(profile, release)
        problems += [f"{subject}: {f.where}: {release.label} in image {image} {f.says}" for subject, f in found]
        if not found:
            logger.info(f"{host.name}: {profile.name}: image {image} carries {release.label}; "
                        "it accepts every flag and env var sparkstack renders")
    return problems
