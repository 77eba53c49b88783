"""Asking a pinned image on a host which engine release it carries and what that release accepts.

The adapter's probe runs once per image inside the image itself (`docker run --pull=never
--network none --entrypoint python3 IMAGE -`); its answer is cached on the host under
ENGINE_PROBE_CACHE, keyed by engine, image id and probe, so a re-run reads a file and a new
image (a moved tag) is asked again. The cache is not configuration: writing it is not a change.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase

from sparkstack.engines import adapter_for
from sparkstack.engines.release import PROBE_MARKER, EngineRelease, ReleaseError, probe_answer

ENGINE_PROBE_CACHE = "/var/lib/sparkstack/engine-probes"
ABSENT = "SPARKSTACK-PROBE: image absent"
FAILED = "SPARKSTACK-PROBE: probe failed"


def probe_script(engine: str, image: str, gpu_flags: tuple[str, ...] = ()) -> str:
    source = adapter_for(engine).probe_source()
    probe_id = hashlib.sha256(source.encode()).hexdigest()[:12]
    encoded = base64.b64encode(source.encode()).decode()
    image_q = shlex.quote(image)
    flags = " ".join(gpu_flags)
    return (
        f"id=$(docker image inspect --format '{{{{.Id}}}}' {image_q} 2>/dev/null) || {{ echo '{ABSENT}'; exit 0; }}; "
        f"cache={ENGINE_PROBE_CACHE}/{engine}-${{id#sha256:}}-{probe_id}.json; "
        f"if [ ! -s \"$cache\" ]; then "
        f"mkdir -p {ENGINE_PROBE_CACHE} && "
        f"if echo {encoded} | base64 -d | docker run --rm -i --pull=never --network none {flags} "
        f"--entrypoint python3 {image_q} - > \"$cache.$$\" 2> \"$cache.err\" "
        # Only an answer carrying the probe's marker is cached; anything else is shown, never kept.
        f"&& grep -q '^{PROBE_MARKER}' \"$cache.$$\"; "
        f"then mv \"$cache.$$\" \"$cache\"; "
        f"else echo '{FAILED}'; tail -n 15 \"$cache.$$\" \"$cache.err\" 2>/dev/null; rm -f \"$cache.$$\"; exit 0; fi; "
        f"fi; cat \"$cache\""
    )


class EngineProbe(FactBase):
    """The probe's JSON for ENGINE in IMAGE, from the host's cache or by running it once."""

    requires_command = "docker"

    def command(self, engine: str, image: str, gpu_flags: tuple[str, ...] = ()) -> str:
        return probe_script(engine, image, gpu_flags)

    def process(self, output):
        return "\n".join(output)


@dataclass(frozen=True)
class ProbeAnswer:
    release: EngineRelease | None
    problem: str | None = None


def read_answer(engine: str, image: str, output: str | None) -> ProbeAnswer:
    text = (output or "").strip()
    if not text or text.startswith(ABSENT):
        return ProbeAnswer(None, f"image {image} is not on the host, so it cannot be asked which {engine} release "
                                 f"it carries; pull it (`docker pull {image}`) and deploy again")
    if text.startswith(FAILED):
        detail = text[len(FAILED):].strip()
        return ProbeAnswer(None, f"image {image} did not answer the {engine} probe:\n{detail}")
    try:
        release = EngineRelease.from_document(probe_answer(text), f"image {image}")
    except (ValueError, ReleaseError) as exc:
        return ProbeAnswer(None, f"image {image}: the {engine} probe's answer is unreadable ({exc})")
    if release.engine != engine:
        return ProbeAnswer(None, f"image {image}: the probe answered for {release.engine}, not {engine}")
    return ProbeAnswer(release)
