"""sparkstack-fetch: put the locked artifacts on this host, with progress and bounded retries.

  sparkstack-fetch image REF                      pull an image (repo@sha256:...), unless present
  sparkstack-fetch resolve-image REF              pull a tag and print what it resolved to (sparkstack lock)
  sparkstack-fetch snapshot IMAGE SPEC_JSON       fetch a model snapshot at its locked commit
  sparkstack-fetch resolve-repo IMAGE SPEC_JSON   resolve a repo revision to a commit and its files (lock)

Installed by sparkstack from files/sparkstack-fetch; the deploy runs it only for what is missing.
Snapshots are fetched by sparkstack-hub inside the engine image (its huggingface_hub, the cache
layout the engine reads). That container gets the HF token and nothing else of the secrets file: read here by
the secrets rule (sparkstack_host/secrets.py), handed to docker in its environment and passed on by name
(`--env HF_TOKEN`), so it is never an argument or a log line.
Standard library only.
"""

import json
import os
import queue
import subprocess
import sys
import threading
import time

from sparkstack_host import contract, secrets

PROGRESS_EVERY_S = 10
ATTEMPTS = 3
RETRY_PAUSE_S = 5
# sparkstack-hub lies beside the program that runs (files/sparkstack-fetch, the shim).
HERE = os.path.dirname(os.path.abspath(sys.argv[0]))
HUB_SCRIPT = os.environ.get("SPARKSTACK_HUB", os.path.join(HERE, "sparkstack-hub"))
SECRETS = contract.SECRETS_PATH
CACHE_DIR = os.environ.get("SPARKSTACK_MODEL_CACHE", "/var/lib/sparkstack/huggingface")
HUB_MARK = "SPARKSTACK-HUB "
# The secrets the hub container may have: a Hugging Face token, under either name huggingface_hub reads.
HUB_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def say(message):
    print(f"sparkstack-fetch: {message}", flush=True)


def lines_of(process):
    """The process's output lines through a queue, so the caller can wake up every PROGRESS_EVERY_S."""
    q = queue.Queue()

    def pump():
        for line in process.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def image_present(ref):
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def pull(ref):
    """`docker pull` (the host's own registry credentials apply), reporting layers at least every 10 s."""
    started = time.monotonic()
    process = subprocess.Popen(["docker", "pull", ref], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    layers, tail = {}, []
    q = lines_of(process)
    last_report = time.monotonic()
    while True:
        try:
            line = q.get(timeout=PROGRESS_EVERY_S)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            tail = (tail + [line])[-5:]
            layer, sep, status = line.partition(": ")
            if sep and len(layer) == 12:
                layers[layer] = status
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            last_report = time.monotonic()
            downloaded = sum(1 for s in layers.values() if s in ("Download complete", "Pull complete", "Already exists"))
            extracted = sum(1 for s in layers.values() if s in ("Pull complete", "Already exists"))
            say(f"pulling {ref}: {downloaded}/{len(layers)} layers downloaded, {extracted}/{len(layers)} extracted, "
                f"{time.monotonic() - started:.0f} s")
    code = process.wait()
    return code, tail, time.monotonic() - started


def with_retries(what, attempt):
    for number in range(1, ATTEMPTS + 1):
        code, tail, seconds = attempt()
        if code == 0:
            return seconds
        say(f"{what}: attempt {number}/{ATTEMPTS} failed after {seconds:.0f} s: {' | '.join(tail[-2:])}")
        if number < ATTEMPTS:
            time.sleep(RETRY_PAUSE_S)
    raise SystemExit(f"sparkstack-fetch: {what}: failed {ATTEMPTS} times; check the host's network and "
                     "registry access, then deploy again")


def cmd_image(ref):
    if image_present(ref):
        say(f"{ref}: present")
        return 0
    seconds = with_retries(f"pull {ref}", lambda: pull(ref))
    if not image_present(ref):
        raise SystemExit(f"sparkstack-fetch: {ref}: docker pull succeeded but the image is not there")
    say(f"{ref}: pulled in {seconds:.1f} s")
    return 0


def cmd_resolve_image(ref):
    with_retries(f"pull {ref}", lambda: pull(ref))
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .}}", ref],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    print(HUB_MARK + json.dumps({"repo_digests": info.get("RepoDigests") or [], "size_bytes": info.get("Size", 0),
                                 "platform": f"{info.get('Os')}/{info.get('Architecture')}",
                                 "nccl": nccl_of(ref)}), flush=True)
    return 0


# The NCCL an engine image carries: pip's nvidia-nccl-cu* wheel (what torch loads), and any system libnccl.
NCCL_PROBE = ("python3 -c \"import importlib.metadata as m; [print('pip', d.metadata['Name'], d.version) for d in "
              "m.distributions() if (d.metadata['Name'] or '').lower().startswith('nvidia-nccl')]\" 2>/dev/null; "
              "for f in /usr/lib/*/libnccl.so.* /usr/lib/libnccl.so.* /usr/local/lib/libnccl.so.*; do "
              "[ -f \"$f\" ] && echo system \"${f##*/}\"; done; true")


def nccl_of(ref):
    """What NCCL the image carries ("pip nvidia-nccl-cu12 2.27.3; system libnccl.so.2.27.3"), "none found", or why
    it could not be asked. The image runs once, without the network, with no GPU and none of the host's files."""
    try:
        result = subprocess.run(["docker", "run", "--rm", "--pull=never", "--network", "none", "--entrypoint", "sh", ref,
                                 "-c", NCCL_PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not asked: {exc}"
    if result.returncode != 0:
        return f"not asked: the image did not run sh (exit {result.returncode})"
    found = sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})
    return "; ".join(found) or "none found"


def hub_secrets():
    """The hub container's secrets from the secrets file, or SystemExit naming the lines that break its rule."""
    try:
        return secrets.read(SECRETS, HUB_SECRETS)
    except secrets.SecretsError as exc:
        raise SystemExit(f"sparkstack-fetch: {exc}") from None


def hub_command(image, verb, spec, endpoint, cache_dir, name, secret_names=()):
    command = ["docker", "run", "--rm", "--pull=never", "--name", name, "--network", "host",
               "--volume", f"{cache_dir}:/root/.cache/huggingface",
               "--volume", f"{HUB_SCRIPT}:/run/sparkstack/sparkstack-hub:ro",
               "--label", "io.sparkstack.fetch=true"]
    for secret in secret_names:
        command += ["--env", secret]  # the name only: docker copies the value from its own environment
    if endpoint:
        command += ["--env", f"HF_ENDPOINT={endpoint}"]
    return command + ["--entrypoint", "python3", image, "/run/sparkstack/sparkstack-hub", verb, json.dumps(spec)]


def run_hub(image, verb, spec, endpoint, cache_dir):
    """Run sparkstack-hub in the image; stream its lines; stop the container if we are stopped."""
    name = f"sparkstack-fetch-{os.getpid()}"
    given = hub_secrets()
    process = subprocess.Popen(hub_command(image, verb, spec, endpoint, cache_dir, name, sorted(given)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **given})
    answer, tail = None, []
    try:
        for line in process.stdout:
            line = line.rstrip("\n")
            if line.startswith(HUB_MARK):
                answer = line[len(HUB_MARK):]
                continue
            tail = (tail + [line])[-5:]
            print(line, flush=True)
        code = process.wait()
    except BaseException:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        raise
    return code, tail, answer


def cmd_hub(verb, image, raw_spec):
    spec = json.loads(raw_spec)
    endpoint = spec.pop("endpoint", None)
    cache_dir = spec.pop("cache_dir", CACHE_DIR)
    os.makedirs(cache_dir, exist_ok=True)
    if not image_present(image):
        raise SystemExit(f"sparkstack-fetch: image {image} is not on this host; it must be pulled first")
    for number in range(1, ATTEMPTS + 1):
        code, tail, answer = run_hub(image, verb, spec, endpoint, cache_dir)
        if code == 0 and answer is not None:
            if verb == "resolve":
                print(HUB_MARK + answer, flush=True)
            return 0
        if code == 3:  # refused by the hub (access, name): retrying does not help
            raise SystemExit(1)
        say(f"{spec['repo']}: attempt {number}/{ATTEMPTS} failed (exit {code}): {' | '.join(tail[-2:])}")
        if number < ATTEMPTS:
            time.sleep(RETRY_PAUSE_S)
    raise SystemExit(f"sparkstack-fetch: {spec['repo']}: failed {ATTEMPTS} times; the next deploy resumes it")


def main(argv):
    usage = "usage: sparkstack-fetch image REF | resolve-image REF | snapshot IMAGE SPEC | resolve-repo IMAGE SPEC"
    if len(argv) == 2 and argv[0] == "image":
        return cmd_image(argv[1])
    if len(argv) == 2 and argv[0] == "resolve-image":
        return cmd_resolve_image(argv[1])
    if len(argv) == 3 and argv[0] in ("snapshot", "resolve-repo"):
        return cmd_hub("fetch" if argv[0] == "snapshot" else "resolve", argv[1], argv[2])
    raise SystemExit(usage)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
