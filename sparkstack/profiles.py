"""Model profiles: the YAML schema, the loader and the cross-profile checks.

One YAML file per model under group_data/models/. Every command that reads
profiles goes through `load_profiles`, which either returns a complete, valid
set or raises `ProfileErrors` carrying one `FILE: field.path: what is wrong`
line per problem. Nothing downstream ever sees a half-valid profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, get_args

import yaml
from pydantic import Field, ValidationError

from sparkstack.cluster import ClusterNode
from sparkstack.engines import SPARK_COMPUTE_CAPABILITY, adapter_for
from sparkstack.engines.release import ReleaseError, parse_specifier, releases_for
from sparkstack.paths import display_path, models_dir
from sparkstack.schema import StrictModel, error_text
from sparkstack_host.contract import DEFAULT_DOOR_PORT

Engine = Literal["vllm", "sglang"]
ENGINES = get_args(Engine)

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
RESERVED_WORDS = ("none", "status", "all", "serve-request")

# Anything that looks like a credential must live in the secrets env file.
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)", re.I)
SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,})$")
SECRET_FLAGS = ("--api-key", "--hf-token", "--token")


GB = Annotated[float, Field(gt=0)]
# Free text the rendered script and unit show in comments: one line of printable characters, so it can never
# become a line of its own there (a newline in a description became a shell line of the root launch script,
# and a `[Service]` section of the unit).
ONE_LINE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
OneLine = Annotated[str, Field(min_length=1, max_length=200, pattern=ONE_LINE_PATTERN)]
# A name or reference the engine or docker reads (an image, a repo, a served name, a parser): printable, no spaces.
TOKEN_PATTERN = r"^[^\x00-\x20\x7f]+$"
Token = Annotated[str, Field(min_length=1, max_length=300, pattern=TOKEN_PATTERN)]
# An argument or env value: shell-quoted into the launch script, so any printable text, but no control character
# (a NUL ends the string docker gets, a newline would read as a second value) and bounded.
ARG_TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
ArgText = Annotated[str, Field(max_length=4096, pattern=ARG_TEXT_PATTERN)]
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]


class Speculative(StrictModel):
    """Speculative decoding settings, mapped onto each engine's own flags."""

    method: Token
    num_speculative_tokens: int | None = Field(default=None, gt=0)
    draft_model: Token | None = None
    num_steps: int | None = Field(default=None, gt=0)
    eagle_topk: int | None = Field(default=None, gt=0)


class Memory(StrictModel):
    fraction: float = Field(gt=0, le=1)
    weights_gb: GB
    resident_gb: GB | None = None


class Cluster(StrictModel):
    """How a model too big for one Spark is spread over a cluster group: one GPU per Spark, so
    nodes = tensor_parallel x pipeline_parallel."""

    tensor_parallel: int = Field(ge=1)
    pipeline_parallel: int = Field(default=1, ge=1)
    # vLLM's own multi-node engine (--nnodes/--node-rank/--master-addr, --headless on workers), or vLLM over a
    # Ray cluster (`ray start` on every node, `vllm serve --distributed-executor-backend ray` on the head).
    backend: Literal["native", "ray"] = "native"
    # Ray only: the bound on each node's object store (`ray start --object-store-memory`). It lives in shared
    # memory beside the weights, so the memory plan counts it on every node; Ray's own default is a share of RAM.
    ray_object_store_gb: GB | None = None
    # From the model's config.json (num_attention_heads, num_key_value_heads), when declared: tensor
    # parallelism splits heads, so it must divide them (KV heads may instead be replicated: tp a multiple).
    attention_heads: int | None = Field(default=None, gt=0)
    kv_heads: int | None = Field(default=None, gt=0)

    @property
    def nodes(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def per_node_extra_gb(self) -> float:
        """What every node holds besides its share of the model: the Ray object store."""
        return self.ray_object_store_gb or 0.0


class Tools(StrictModel):
    parser: Token


class Variant(StrictModel):
    """A named alternative launch of the same model (e.g. a rollback without EAGLE).

    Fields left out inherit from the profile; `speculative: null` turns
    speculative decoding off for this variant.
    """

    description: OneLine | None = None
    speculative: Speculative | None = None
    memory_fraction: float | None = Field(default=None, gt=0, le=1)
    extra_args: list[ArgText] | None = None
    expected_decode_tok_s: float | None = Field(default=None, gt=0)


class Profile(StrictModel):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: OneLine
    aliases: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = []
    engine: Engine
    # The engine release the image carries: a version (0.33.0) or a PEP 440 range (>=0.33.0).
    # `sparkstack validate` checks every variant against the committed snapshots of releases in
    # it; the deploy asks the image itself and refuses one outside it.
    engine_version: OneLine
    image: Token
    model: Token
    # The branch, tag or commit of `model` to lock (`sparkstack lock` resolves it to a commit on a host).
    revision: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")] = "main"
    served_model_name: Token
    port: int = Field(ge=1024, le=65535)
    context_length: int = Field(gt=0)
    memory: Memory
    vision: bool
    language_model_only: bool = False
    speculative: Speculative | None = None
    tools: Tools | None = None
    reasoning_parser: Token | None = None
    # What the front door (sparkstack-frontdoor) fixes in chat requests before this model's chat template
    # sees them: merge_consecutive_turns for strict-alternation templates (user and plain assistant turns;
    # tool calls and results never), system_first for templates that demand one system message first.
    request_fixes: list[Literal["merge_consecutive_turns", "system_first"]] = []
    # A model too big for one Spark: how it is spread over a cluster group (see Cluster).
    cluster: Cluster | None = None
    # Which MoE kernels the engine must use, in the engine's own backend names (vLLM
    # --moe-backend, SGLang --moe-runner-backend); the adapter spells it for the declared release
    # and refuses a backend the target GPU cannot run.
    moe_backend: Token | None = None
    # The checkpoint's quantization as its config.json names it (quantization_config.quant_method:
    # compressed-tensors, fp8, awq, modelopt, ...), or "none" for unquantized weights. Engines pick MoE
    # kernels by it: vLLM refuses --moe-backend marlin for an unquantized MoE.
    checkpoint_quantization: Token | None = None
    env: dict[EnvName, ArgText] = {}
    extra_args: list[ArgText] = []
    variants: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Variant] = {}
    default_variant: str | None = None
    readiness_timeout_s: int = Field(default=900, gt=0)
    stop_timeout_s: int = Field(default=60, gt=0)
    # The front door stops the model once nothing has asked for it this long (seconds); only in a group with
    # on-demand switching (sparkstack_frontdoor_on_demand), where the next request brings it back. None: never.
    idle_ttl_s: int | None = Field(default=None, gt=0)
    expected_decode_tok_s: float | None = Field(default=None, gt=0)

    # --- derived views -------------------------------------------------
    @property
    def unit_name(self) -> str:
        return f"{self.engine}-{self.name}.service"

    @property
    def container_name(self) -> str:
        return f"sparkstack-{self.name}"

    @property
    def variant_names(self) -> list[str]:
        return list(self.variants) or ["default"]

    @property
    def effective_default_variant(self) -> str:
        return self.default_variant or self.variant_names[0]

    def resolve(self, variant: str) -> "ResolvedVariant":
        """The settings one variant actually launches with."""
        if variant not in self.variant_names:
            raise KeyError(variant)
        spec = self.variants.get(variant)
        speculative = self.speculative
        fraction = self.memory.fraction
        extra_args = list(self.extra_args)
        expected = self.expected_decode_tok_s
        description = None
        if spec is not None:
            if "speculative" in spec.model_fields_set:
                speculative = spec.speculative
            fraction = spec.memory_fraction or fraction
            extra_args += spec.extra_args or []
            expected = spec.expected_decode_tok_s or expected
            description = spec.description
        return ResolvedVariant(variant, description, speculative, fraction, extra_args, expected)

    @property
    def required_memory_gb(self) -> float:
        """What the model holds once loaded; the weights when the source is silent."""
        return self.memory.resident_gb or self.memory.weights_gb


@dataclass(frozen=True)
class ResolvedVariant:
    name: str
    description: str | None
    speculative: Speculative | None
    memory_fraction: float
    extra_args: list[str]
    expected_decode_tok_s: float | None

    @property
    def max_tokens_per_step(self) -> int | None:
        """Most tokens one decode step (one streamed chunk) can yield: 1, k+1 with k draft tokens, None if not declared."""
        if self.speculative is None:
            return 1
        k = self.speculative.num_speculative_tokens
        return k + 1 if k else None


@dataclass(frozen=True)
class ProfileError:
    file: str
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class ProfileErrors(Exception):
    def __init__(self, errors: list[ProfileError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class LoadedProfile:
    profile: Profile
    source: Path


# --- loading -------------------------------------------------------------

def collect_profile_files(paths: list[Path] | None = None) -> list[Path]:
    paths = paths or [models_dir()]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            files.append(path)
    return files


def load_profiles(paths: list[Path] | None = None) -> list[LoadedProfile]:
    """Load and validate every profile, or raise ProfileErrors naming each problem."""
    errors: list[ProfileError] = []
    loaded: list[LoadedProfile] = []
    files = collect_profile_files(paths)
    if not files:
        where = ", ".join(display_path(p) for p in (paths or [models_dir()]))
        raise ProfileErrors([ProfileError(where, "(files)", "no *.yaml model profiles found")])
    for path in files:
        profile, file_errors = _load_one(path)
        errors.extend(file_errors)
        if profile is not None:
            loaded.append(LoadedProfile(profile, path))
    errors.extend(_cross_profile_errors(loaded))
    if not errors:
        errors.extend(engine_release_errors(loaded))
    if errors:
        raise ProfileErrors(errors)
    return sorted(loaded, key=lambda lp: lp.profile.name)


def _load_one(path: Path) -> tuple[Profile | None, list[ProfileError]]:
    shown = display_path(path)
    if not path.is_file():
        return None, [ProfileError(shown, "(file)", "no such file")]
    text = path.read_text(encoding="utf-8")
    aliases = _alias_count(text)
    if aliases > MAX_YAML_ALIASES:
        # Each alias may stand for a tree of aliases: validating the expansion grows exponentially.
        return None, [ProfileError(shown, "(yaml)", f"{aliases} YAML aliases (*name); a profile may use at most "
                                                    f"{MAX_YAML_ALIASES}")]
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        return None, [ProfileError(shown, "(yaml)", f"YAML syntax error: {problem}", line)]
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        return None, [ProfileError(shown, "(document)", "must be a mapping of profile fields")]
    lines = _line_index(node)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        return None, [
            ProfileError(shown, _loc(err["loc"]), _message(err), lines.get(tuple(err["loc"][:-1]) if err["type"] == "missing" else tuple(err["loc"])))
            for err in exc.errors()
        ]
    errors = [ProfileError(shown, field, msg, lines.get(loc)) for loc, field, msg in _semantic_errors(profile, path)]
    errors += [ProfileError(shown, field, msg, lines.get(loc)) for loc, field, msg in _secret_errors(profile)]
    errors += [ProfileError(shown, field, msg, lines.get(loc)) for loc, field, msg in _managed_errors(profile)]
    return (None if errors else profile), errors


# Profiles need few or no YAML aliases; a document of nested aliases ("billion laughs") is refused unexpanded.
MAX_YAML_ALIASES = 32


def _alias_count(text: str) -> int:
    """The aliases in a YAML text, counted on the event stream (nothing is expanded); 0 if it does not parse
    (the loader then reports the syntax error with its line)."""
    try:
        return sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return 0


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(document)"


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; the fields are `Profile` in sparkstack/profiles.py)"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return error_text(err)
    if kind == "literal_error":
        choices = err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{err['loc'][-1]} {err['input']!r} is not supported (choose one of: {choices})"
    if kind.endswith("_type"):
        return f"wrong type: {err['msg'].lower()}, got {type(err['input']).__name__} {err['input']!r}"
    if kind == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(err["ctx"]["pattern"], f"does not match {err['ctx']['pattern']}")
        return f"{str(err['input'])[:80]!r} {meaning}"
    return f"{err['msg']} (got {err['input']!r})"


PATTERN_MEANINGS = {
    NAME_PATTERN: "is not a valid name (lower-case letters, digits and '-', starting with a letter)",
    ONE_LINE_PATTERN: "is not one line of printable characters (no newline or other control character)",
    TOKEN_PATTERN: "is not one printable word (no space, newline or other control character)",
    ARG_TEXT_PATTERN: "holds a control character (a newline, a NUL, an escape): values are printable text",
    ENV_NAME_PATTERN: "is not an environment variable name (letters, digits and _, not starting with a digit)",
}


def _line_index(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each field path to the 1-based line it was written on."""
    index: dict[tuple, int] = {}
    if node is None:
        return index
    index[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            index[path] = key.start_mark.line + 1
            index.update({k: v for k, v in _line_index(value, path).items() if k != path})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index.update(_line_index(item, prefix + (i,)))
    return index


def _semantic_errors(profile: Profile, path: Path) -> list[tuple[tuple, str, str]]:
    errors: list[tuple[tuple, str, str]] = []
    if profile.name != path.stem:
        errors.append((("name",), "name", f"{profile.name!r} must match the file name {path.stem!r}"))
    if profile.vision and profile.language_model_only:
        errors.append((("language_model_only",), "language_model_only",
                       "cannot be true on a profile that declares vision: true (it would turn the vision encoder off)"))
    for alias in profile.aliases:
        if alias in RESERVED_WORDS:
            errors.append((("aliases",), "aliases", f"{alias!r} is reserved by llm-switch"))
    if profile.name in RESERVED_WORDS:
        errors.append((("name",), "name", f"{profile.name!r} is reserved by llm-switch"))
    if profile.variants and profile.default_variant is None:
        errors.append((("default_variant",), "default_variant",
                       f"required when variants are declared (one of: {', '.join(profile.variants)})"))
    if profile.default_variant is not None and profile.default_variant not in profile.variant_names:
        errors.append((("default_variant",), "default_variant",
                       f"{profile.default_variant!r} is not a declared variant (declared: {', '.join(profile.variant_names)})"))
    if profile.memory.resident_gb is not None and profile.memory.resident_gb < profile.memory.weights_gb:
        errors.append((("memory", "resident_gb"), "memory.resident_gb",
                       f"{profile.memory.resident_gb} GB is less than the weights ({profile.memory.weights_gb} GB)"))
    if profile.cluster is not None:
        c = profile.cluster
        if profile.engine != "vllm":
            errors.append((("cluster",), "cluster", f"not built for {profile.engine} yet: sparkstack renders multi-node "
                           "launches for vLLM only (its native multi-node engine)"))
        if c.backend == "ray" and c.ray_object_store_gb is None:
            errors.append((("cluster", "ray_object_store_gb"), "cluster.ray_object_store_gb",
                           "required with backend: ray: the bound on each node's Ray object store in GB (it is "
                           "shared memory beside the weights, and Ray's default is a share of all memory)"))
        if c.backend != "ray" and c.ray_object_store_gb is not None:
            errors.append((("cluster", "ray_object_store_gb"), "cluster.ray_object_store_gb",
                           f"only for backend: ray (this profile's backend is {c.backend})"))
        if c.attention_heads is not None and c.attention_heads % c.tensor_parallel:
            errors.append((("cluster", "tensor_parallel"), "cluster.tensor_parallel",
                           f"{c.tensor_parallel} does not divide the {c.attention_heads} attention heads"))
        if c.kv_heads is not None and c.kv_heads % c.tensor_parallel and c.tensor_parallel % c.kv_heads:
            errors.append((("cluster", "tensor_parallel"), "cluster.tensor_parallel",
                           f"{c.tensor_parallel} neither divides the {c.kv_heads} KV heads nor is a multiple of them"))
    try:
        parse_specifier(profile.engine_version)
    except ReleaseError as exc:
        errors.append((("engine_version",), "engine_version", str(exc)))
    else:
        for field, message in adapter_for(profile.engine).setting_errors(profile, SPARK_COMPUTE_CAPABILITY):
            errors.append(((field,), field, message))
    errors.extend(_platform_errors(profile))
    speculative_sites = [(("speculative",), profile.speculative)]
    speculative_sites += [(("variants", name, "speculative"), v.speculative) for name, v in profile.variants.items()]
    for loc, spec in speculative_sites:
        if spec is not None:
            errors.extend(_speculative_errors(profile.engine, loc, spec))
    return errors


def _platform_errors(profile: Profile) -> list[tuple[tuple, str, str]]:
    """What breaks under a model on a GB10 (../shared/PLATFORM.md): vLLM's sleep mode, whose wake_up crashes the
    EngineCore there and once needed a power cycle (vllm-project/vllm#50011)."""
    errors = []
    arg_lists = [(("extra_args",), profile.extra_args)]
    arg_lists += [(("variants", name, "extra_args"), v.extra_args or []) for name, v in profile.variants.items()]
    for loc, args in arg_lists:
        for i, arg in enumerate(args):
            flag, _, value = arg.partition("=")
            if flag.replace("_", "-") == "--enable-sleep-mode" and value.lower() not in ("false", "0"):
                errors.append((loc + (i,), ".".join(loc) + f".{i}",
                               "--enable-sleep-mode is refused on a Spark: waking a sleeping engine crashes it on GB10 "
                               "(vllm-project/vllm#50011); stop the model with llm-switch instead"))
    return errors


def _speculative_errors(engine: str, loc: tuple, spec: Speculative) -> list[tuple[tuple, str, str]]:
    errors = []
    where = ".".join(loc)
    adapter = adapter_for(engine)
    methods = adapter.speculative_methods
    if spec.method not in methods:
        errors.append((loc + ("method",), f"{where}.method",
                       f"{engine} does not take speculative method {spec.method!r} (it takes: {', '.join(methods)})"))
    for name in spec.model_fields_set - set(adapter.speculative_fields):
        if getattr(spec, name) is not None:
            errors.append((loc + (name,), f"{where}.{name}", f"{engine} does not take {name}; it is not one of its speculative settings"))
    for field, message in adapter.speculative_requirements(spec):
        errors.append((loc + (field,), f"{where}.{field}", message))
    return errors


def _secret_errors(profile: Profile) -> list[tuple[tuple, str, str]]:
    errors = []
    hint = "secrets belong in /etc/sparkstack/secrets.env on the host, never in a profile"
    for key, value in profile.env.items():
        if SECRET_NAME.search(key) or SECRET_VALUE.match(value):
            errors.append((("env", key), f"env.{key}", f"looks like a secret written inline; {hint}"))
    arg_lists = [(("extra_args",), profile.extra_args)]
    arg_lists += [(("variants", name, "extra_args"), v.extra_args or []) for name, v in profile.variants.items()]
    for loc, args in arg_lists:
        for i, arg in enumerate(args):
            if arg.split("=")[0] in SECRET_FLAGS or SECRET_VALUE.match(arg):
                field = ".".join(loc) + f".{i}"
                errors.append((loc + (i,), field, f"passes a secret on the command line; {hint}"))
    return errors


def _managed_errors(profile: Profile) -> list[tuple[tuple, str, str]]:
    """extra_args and env may not set what the kit renders from a profile field: the engine would keep the
    second value while the plan, the memory gate and `sparkstack clients` use the field's."""
    errors = []
    adapter = adapter_for(profile.engine)
    arg_lists = [(("extra_args",), profile.extra_args)]
    arg_lists += [(("variants", name, "extra_args"), v.extra_args or []) for name, v in profile.variants.items()]
    for loc, args in arg_lists:
        for i, arg in enumerate(args):
            flag = adapter.managed_flag(arg)
            if flag is not None and flag not in SECRET_FLAGS:
                errors.append((loc + (i,), ".".join(loc) + f".{i}",
                               f"{arg.split('=', 1)[0]} is rendered by sparkstack from {adapter.managed_flags[flag]}; set that "
                               f"instead (given twice, {profile.engine} would keep this value, which the memory plan never checked)"))
    managed_env = {**adapter.managed_env,
                   **{name: "the kit (the compile cache, kept per image on the host)" for name in adapter.compile_cache_env}}
    for key in profile.env:
        if key in managed_env:
            errors.append((("env", key), f"env.{key}", f"is set by {managed_env[key]}; a profile may not set it"))
    return errors


def _cross_profile_errors(loaded: list[LoadedProfile]) -> list[ProfileError]:
    errors: list[ProfileError] = []
    names: dict[str, LoadedProfile] = {}
    ports: dict[int, LoadedProfile] = {}
    served: dict[str, LoadedProfile] = {}
    for lp in loaded:
        p, shown = lp.profile, display_path(lp.source)
        # Two engines answering to one name: a client (and the door's model list) could not tell them apart.
        other = served.setdefault(p.served_model_name, lp)
        if other is not lp:
            errors.append(ProfileError(shown, "served_model_name",
                                       f"{p.served_model_name!r} is already served by {display_path(other.source)}"))
        if p.port == DEFAULT_DOOR_PORT:
            errors.append(ProfileError(shown, "port", f"{p.port} is where the front door listens by default "
                                                      "(sparkstack_frontdoor_port); give this model another port"))
        for label, word in [("name", p.name)] + [("aliases", a) for a in p.aliases]:
            other = names.get(word)
            if other is not None and other is not lp:
                errors.append(ProfileError(shown, label, f"{word!r} is already used by {display_path(other.source)}"))
            elif other is None:
                names[word] = lp
        other = ports.get(p.port)
        if other is not None:
            errors.append(ProfileError(shown, "port", f"{p.port} is already used by {display_path(other.source)}"))
        else:
            ports[p.port] = lp
    return errors


def engine_release_errors(loaded: list[LoadedProfile]) -> list[ProfileError]:
    """Every variant of every profile, rendered and checked against each committed snapshot of an
    engine release its engine_version admits (sparkstack/engines/releases/)."""
    errors: list[ProfileError] = []
    for lp in loaded:
        p, shown = lp.profile, display_path(lp.source)
        releases = releases_for(p.engine, p.engine_version)
        if not releases:
            errors.append(ProfileError(shown, "engine_version",
                                       f"no committed snapshot of a {p.engine} release in {p.engine_version!r}, so nothing can "
                                       f"check what we render; run `python tools/snapshot_engine.py {p.engine}==VERSION` "
                                       "for a release in that range and commit its output"))
            continue
        for release in releases:
            errors.extend(ProfileError(shown, subject, f"{finding.where}: {release.label} {finding.says}")
                          for subject, finding in release_findings(p, release))
    return errors


def release_findings(profile: Profile, release) -> list[tuple[str, object]]:
    """(PROFILE[/VARIANT], Finding) for everything one engine release refuses or ignores in a profile."""
    adapter = adapter_for(profile.engine)
    return [(subject, finding) for subject, argv, env in rendered_launches(profile)
            for finding in adapter.check(argv, env, release)]


def rendered_launches(profile: Profile) -> list[tuple[str, list[str], dict[str, str]]]:
    """(PROFILE[/VARIANT], engine argv, engine env) for each variant, as its launch script runs it (a cluster
    profile as a worker rank), with revisions as the profile writes them."""
    adapter = adapter_for(profile.engine)
    launches = []
    for variant in profile.variant_names:
        resolved = profile.resolve(variant)
        subject = profile.name if variant == "default" else f"{profile.name}/{variant}"
        argv = adapter.command(profile, resolved, _IntentRevisions(profile), _SAMPLE_WORKER if profile.cluster else None)
        env = adapter.environment(profile, resolved)
        if profile.cluster:
            env |= adapter.cluster_environment(profile, _SAMPLE_WORKER)
        launches.append((subject, argv, env))
    return launches


# A worker rank (it carries every multi-node flag, --headless too), for checking a cluster profile's
# launch against an engine release before any group is chosen. Over Ray only the head runs the engine,
# and `command` gives the `vllm serve` it runs whichever rank asks.
_SAMPLE_WORKER = ClusterNode("worker", 1, "192.0.2.2", "head", "192.0.2.1", 2, "eth1", 29501, "127.0.0.1")


class _IntentRevisions:
    """Revisions as written in the profile, for checks that run before any lock is read."""

    def __init__(self, profile: Profile):
        self.profile = profile

    def of(self, repo: str) -> str:
        return self.profile.revision if repo == self.profile.model else "main"


def find_profile(loaded: list[LoadedProfile], word: str) -> Profile | None:
    for lp in loaded:
        if word == lp.profile.name or word in lp.profile.aliases:
            return lp.profile
    return None
