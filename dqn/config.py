"""One frozen-dataclass configuration tree.

Every field carries a one-line help text (shown by ``--help``) and is validated when
the tree is built, with an error naming the field (``learner.lr: must be > 0``).
Parsing of files, flags and environment variables happens only in entry points,
through :func:`load`; components receive the frozen objects.

Sources, later wins: defaults < config file (TOML or JSON) < environment variables
``DQN_<SECTION>__<FIELD>`` (e.g. ``DQN_LEARNER__LR=0.001``) < ``--section.field``
command-line flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqn import presets
from dqn.errors import ConfigError  # re-exported: dqn.config.ConfigError is the same class


def opt(default: Any, help: str, **checks: Any) -> Any:
    """A config field: default, one-line help, and checks (gt, ge, le, lt, choices);
    ``metavar`` names its value in ``--help`` where the type alone says too little
    (``PATH``)."""
    if isinstance(default, dict):  # a mutable default: each Config gets its own copy
        return dataclasses.field(
            default_factory=lambda: dict(default), metadata={"help": help, **checks}
        )
    return dataclasses.field(default=default, metadata={"help": help, **checks})


def _check_field(section: str, f: dataclasses.Field, value: Any) -> None:
    name = f"{section}.{f.name}" if section else f.name
    meta = f.metadata
    if value is None and meta.get("optional"):
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{name}: must be one of {list(meta['choices'])}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        for key, op, text in (
            ("gt", lambda a, b: a > b, ">"),
            ("ge", lambda a, b: a >= b, ">="),
            ("lt", lambda a, b: a < b, "<"),
            ("le", lambda a, b: a <= b, "<="),
        ):
            if key in meta and not op(value, meta[key]):
                raise ConfigError(f"{name}: must be {text} {meta[key]}, got {value!r}")


class _Section:
    """Validates field types and ranges after construction."""

    _section: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            name = f"{self._section}.{f.name}"
            value = _coerce(name, hints[f.name], value)
            object.__setattr__(self, f.name, value)
            _check_field(self._section, f, value)
        self.check()

    def check(self) -> None:
        """Cross-field checks of a section."""


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Coerce strings (from flags, env vars) and JSON lists to the field's type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (
            isinstance(value, str) and value.lower() in ("none", "null", "")
        )
        if is_none and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
    if hint is dict or origin is dict:
        return _json_object(name, value)
    try:
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(_coerce(name, args[0], v) for v in value)
        if hint is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if hint is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)
                return int(value)
            return int(str(value).replace("_", ""))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (ValueError, TypeError):
        type_name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{name}: expected {type_name}, got {value!r}") from None
    return value


def _json_object(name: str, value: Any) -> dict:
    """A dict field: a mapping (TOML table, JSON object) or a JSON object as text."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError as exc:
            raise ConfigError(f"{name}: not valid JSON ({exc}): {value!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a JSON object, got {value!r}")
    return dict(value)


@dataclass(frozen=True)
class EnvConfig(_Section):
    """What env the actors and the evaluator build, and the spec the learner and the
    replay server use instead of building one (``dqn train`` resolves it; see
    ``docs/envs.md``)."""

    _section: typing.ClassVar[str] = "env"
    id: str = opt(
        "CartPole-v1",
        "a registered gymnasium id, 'module:EnvId' (imports module first) or "
        "'module:factory' (a class or function returning a gymnasium Env); "
        "Probe1-v0..Probe5-v0 too",
    )
    kwargs: dict = opt({}, "JSON object of keyword arguments for the factory or gym.make")
    factory: str = opt(
        "",
        "a callable returning an Env, by value (base64 of its cloudpickle); dqn.train sets "
        "it for an env defined in a notebook or script; env.id then only names it",
    )
    wrappers: tuple[str, ...] = opt(
        (), "import paths 'module:Wrapper' applied in order, each called as Wrapper(env)"
    )
    solve_threshold: float | None = opt(
        None,
        "greedy mean return that counts as solved (default: the env's reward_threshold)",
        optional=True,
    )
    obs_shape: tuple[int, ...] | None = opt(
        None,
        "spec: observation shape, e.g. 4 or 4,84,84 (dqn train fills it in; set it for a "
        "cluster learner or replay server that has no env)",
        optional=True,
    )
    obs_dtype: str | None = opt(
        None,
        "spec: dtype observations travel in: float32 or uint8 (images)",
        optional=True,
        choices=("float32", "uint8"),
    )
    n_actions: int | None = opt(None, "spec: number of discrete actions", optional=True, ge=1)

    def check(self) -> None:
        if self.obs_shape is not None and any(d < 1 for d in self.obs_shape):
            raise ConfigError(f"env.obs_shape: sizes must be >= 1, got {list(self.obs_shape)}")

    @property
    def has_spec(self) -> bool:
        """Whether the spec fields are set (the learner and replay server need them)."""
        return self.obs_shape is not None and self.n_actions is not None

    def require_spec(self) -> None:
        """The learner and the replay server take the env's spec from here."""
        if not self.has_spec:
            missing = "env.obs_shape" if self.obs_shape is None else "env.n_actions"
            raise ConfigError(
                f"{missing}: not set; the learner and the replay server build no env, so "
                "the spec comes from the config (dqn train fills it in; for a cluster set "
                "env.obs_shape, env.obs_dtype and env.n_actions, printed by `dqn env-spec`)"
            )


@dataclass(frozen=True)
class NetworkConfig(_Section):
    _section: typing.ClassVar[str] = "network"
    hidden: tuple[int, ...] = opt((128, 128), "hidden layer sizes of the MLP Q-network")
    dueling: bool = opt(False, "use a dueling head (value + advantage streams)")

    def check(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"network.hidden: sizes must be >= 1, got {list(self.hidden)}")


@dataclass(frozen=True)
class ReplayConfig(_Section):
    _section: typing.ClassVar[str] = "replay"
    capacity: int = opt(100_000, "transitions held; older ones are overwritten", ge=1)
    min_size: int = opt(1_000, "transitions stored before the first sample", ge=1)
    samples_per_insert: float = opt(
        32.0,
        "replay ratio kept: sampled / inserted transitions (the learner waits when ahead, "
        "the actors are slowed when ahead); 0 switches the rate limiter off",
        ge=0,
    )
    spi_tolerance: float = opt(
        0.0,
        "allowed drift from samples_per_insert, in sampled transitions (band width / 2); "
        "0 = twice one sample call or one pushed batch, whichever is larger",
        ge=0,
    )
    max_batch_transitions: int = opt(4_096, "largest accepted TransitionBatch", ge=1)
    max_message_mb: int = opt(64, "largest gRPC message, MiB", ge=1, le=1024)
    host: str = opt("127.0.0.1", "address the replay server binds")
    port: int = opt(0, "port the replay server binds; 0 picks a free one", ge=0, le=65535)
    metrics_port: int = opt(
        0,
        "HTTP port of the replay server's Prometheus /metrics (0 = pick one, -1 = off)",
        ge=-1,
        le=65535,
    )
    checkpoint_path: str | None = opt(
        None,
        "file the replay server checkpoints to and restores from at start (empty = none)",
        optional=True,
        metavar="PATH",
    )
    checkpoint_every_seconds: float = opt(10.0, "seconds between replay checkpoints", gt=0)
    prioritized: bool = opt(
        False, "prioritized replay: sample in proportion to (|TD| + eps) ** alpha (sum tree)"
    )
    priority_alpha: float = opt(
        0.6, "prioritized: exponent alpha (0 = uniform); applied by the server only", ge=0
    )
    priority_eps: float = opt(
        1e-3, "prioritized: added to |TD| so no transition gets probability 0", gt=0
    )

    def check(self) -> None:
        if self.min_size > self.capacity:
            raise ConfigError(
                f"replay.min_size: {self.min_size} exceeds replay.capacity {self.capacity}"
            )


@dataclass(frozen=True)
class ActorConfig(_Section):
    _section: typing.ClassVar[str] = "actors"
    num_actors: int = opt(
        2,
        "actors (Ray actors or processes); 'auto' sets autoscale",
        ge=1,
        le=1024,
        metavar="INT|auto",
    )
    envs_per_actor: int = opt(8, "gymnasium envs per actor, stepped as one vector env", ge=1)
    push_every: int = opt(64, "transitions per TransitionBatch sent to the replay server", ge=1)
    epsilon: str = opt(
        "linear",
        "exploration: 'linear' decay shared by all, or 'apex' fixed per env",
        choices=("linear", "apex"),
    )
    eps_start: float = opt(1.0, "linear: starting epsilon", ge=0, le=1)
    eps_end: float = opt(0.02, "linear: final epsilon", ge=0, le=1)
    eps_decay_steps: int = opt(10_000, "linear: fleet env steps to reach eps_end", ge=1)
    apex_eps: float = opt(
        0.4, "apex: base epsilon, eps_i = apex_eps ** (1 + i/(N-1) * alpha)", ge=0, le=1
    )
    apex_alpha: float = opt(7.0, "apex: spread exponent alpha", ge=0)
    weight_poll_steps: int = opt(1, "vector steps between non-blocking weight pick-ups", ge=1)
    cpus_per_actor: float = opt(0.5, "Ray CPUs reserved per actor (fractional is fine)", gt=0)
    max_restarts: int = opt(-1, "Ray restarts of a failed actor (-1 = forever)", ge=-1)
    runner: str = opt(
        "ray", "how actors run: 'ray' actors or plain 'process'es", choices=("ray", "process")
    )
    autoscale: bool = opt(
        False,
        "dqn actors: one actor per cpus_per_actor CPUs of the cluster, following nodes as "
        "they join and leave (--num-actors auto sets it)",
    )
    placement: str = opt(
        "spread",
        "Ray placement: 'spread' actors across nodes or 'pack' them",
        choices=("spread", "pack"),
    )
    control_host: str = opt("127.0.0.1", "dqn actors: address the fleet control service binds")
    control_port: int = opt(
        0, "dqn actors: port of the fleet control service; 0 picks a free one", ge=0, le=65535
    )
    initial_priorities: bool = opt(
        True,
        "prioritized replay: actors send |n-step TD| of each transition from their local "
        "network (Ape-X); false = the server gives new transitions the largest priority",
    )


@dataclass(frozen=True)
class LearnerConfig(_Section):
    _section: typing.ClassVar[str] = "learner"
    device: str = opt(
        "auto", "torch device: auto (cuda if present), cpu or cuda", choices=("auto", "cpu", "cuda")
    )
    batch_size: int = opt(128, "transitions per update", ge=1)
    lr: float = opt(2.5e-3, "Adam learning rate", gt=0)
    adam_eps: float = opt(1e-5, "Adam epsilon", gt=0)
    gamma: float = opt(0.99, "discount factor", ge=0, le=1)
    n_step: int = opt(3, "n-step returns (built by the actors)", ge=1, le=100)
    double_dqn: bool = opt(True, "Double DQN targets (online argmax, target value)")
    huber_delta: float = opt(1.0, "Huber loss delta", gt=0)
    grad_clip: float = opt(10.0, "max global gradient norm (0 = off)", ge=0)
    target_update: str = opt(
        "polyak", "target network update: 'polyak' or 'hard'", choices=("polyak", "hard")
    )
    tau: float = opt(0.01, "polyak: target <- tau*online + (1-tau)*target each update", gt=0, le=1)
    target_period: int = opt(500, "hard: updates between target copies", ge=1)
    publish_every: int = opt(10, "updates between weight publications to actors", ge=1)
    batches_per_call: int = opt(16, "batches fetched per Sample RPC", ge=1, le=1024)
    prefetch_calls: int = opt(2, "Sample responses kept ready ahead of use", ge=1, le=64)
    max_updates_per_sec: float = opt(
        0.0,
        "cap on update rate (0 = no cap); keeps a CPU-only learner from starving actors",
        ge=0,
    )
    threads: int = opt(1, "torch CPU threads of the learner", ge=1)
    priority_beta0: float = opt(
        0.4, "prioritized: importance-sampling exponent beta at the first update", ge=0, le=1
    )
    priority_beta_steps: int = opt(
        10_000, "prioritized: updates over which beta rises linearly to 1", ge=1
    )
    cuda_graph: bool = opt(
        False, "on CUDA: run the update as a captured CUDA graph (ignored on CPU)"
    )
    host: str = opt("127.0.0.1", "address the weight service binds")
    port: int = opt(0, "port the weight service binds; 0 picks a free one", ge=0, le=65535)
    metrics_port: int = opt(
        0,
        "HTTP port of the learner's Prometheus /metrics (0 = pick one, -1 = off)",
        ge=-1,
        le=65535,
    )


@dataclass(frozen=True)
class EvalConfig(_Section):
    _section: typing.ClassVar[str] = "eval"
    episodes: int = opt(20, "greedy evaluation episodes per evaluation (played at once)", ge=1)
    schedule: str = opt(
        "versions",
        "when the evaluator actor evaluates the newest weights: every 'versions' "
        "(every_versions), every 'seconds' (every_seconds) or 'continuous'ly; at most one "
        "evaluation is in flight",
        choices=("versions", "seconds", "continuous"),
    )
    every_versions: int = opt(
        25, "versions: weight versions between evaluations (one per learner.publish_every)", ge=1
    )
    every_seconds: float = opt(5.0, "seconds: seconds between the starts of evaluations", gt=0)
    nice: int = opt(
        10,
        "OS niceness the evaluator plays at (0-19): training gets the CPU first, the "
        "evaluator what is left (see README for its share)",
        ge=0,
        le=19,
    )
    cpus: float = opt(
        0.0,
        "Ray CPUs the evaluator actor reserves (0: none, so autoscale still gives every "
        "CPU an actor; it uses a share of one core, see README)",
        ge=0,
    )
    final_wait_seconds: float = opt(
        30.0,
        "at the end of an unsolved run, how long the learner waits for the evaluation of "
        "its final weights (0 = not at all)",
        ge=0,
    )


@dataclass(frozen=True)
class RunConfig(_Section):
    _section: typing.ClassVar[str] = "run"
    dir: str = opt(
        "runs/latest", "run directory for config, metrics, checkpoints, policy", metavar="PATH"
    )
    seed: int = opt(0, "base random seed", ge=0)
    max_seconds: float = opt(
        600.0,
        "stop after this many seconds from the start (dqn train: the process's; "
        "dqn.train: the call's)",
        gt=0,
    )
    max_env_steps: int = opt(2_000_000, "stop after this many env steps (fleet total)", ge=1)
    max_updates: int = opt(10_000_000, "stop after this many learner updates", ge=1)
    checkpoint_every_seconds: float = opt(30.0, "seconds between learner checkpoints", gt=0)
    progress_every_seconds: float = opt(2.0, "seconds between progress lines", gt=0)
    plot_every_seconds: float = opt(
        15.0, "seconds between refreshes of learning_curve.png while training", gt=0
    )
    stop_when_solved: bool = opt(
        True, "stop as soon as the greedy evaluation reaches the threshold"
    )


@dataclass(frozen=True)
class SecurityConfig(_Section):
    _section: typing.ClassVar[str] = "security"
    token_file: str | None = opt(
        None,
        "file holding the shared RPC token (else env DQN_AUTH_TOKEN; none = no token)",
        optional=True,
        metavar="PATH",
    )
    tls_cert: str | None = opt(
        None, "PEM certificate of this process (enables TLS)", optional=True, metavar="PATH"
    )
    tls_key: str | None = opt(None, "PEM private key for tls_cert", optional=True, metavar="PATH")
    tls_ca: str | None = opt(
        None, "PEM CA that signs the peers' certificates", optional=True, metavar="PATH"
    )
    tls_client_auth: bool = opt(False, "mutual TLS: servers require client certificates")
    tls_server_name: str | None = opt(
        None,
        "name to verify in server certificates (default: the address host)",
        optional=True,
    )


@dataclass(frozen=True)
class Config:
    env: EnvConfig = dataclasses.field(default_factory=EnvConfig)
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)
    actors: ActorConfig = dataclasses.field(default_factory=ActorConfig)
    learner: LearnerConfig = dataclasses.field(default_factory=LearnerConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    security: SecurityConfig = dataclasses.field(default_factory=SecurityConfig)

    def __post_init__(self) -> None:
        r = self.replay
        if r.samples_per_insert > 0 and r.spi_tolerance > 0:
            need = self._spi_need()
            if r.spi_tolerance < need:
                raise ConfigError(
                    f"replay.spi_tolerance: {r.spi_tolerance} would deadlock; it must be at "
                    f"least one sample call or one pushed batch ({need:g} sampled transitions)"
                )

    def _spi_need(self) -> float:
        """The narrowest band that lets a whole sample call and a whole pushed batch
        through (narrower, sampler and pushers could wait on each other forever)."""
        return max(
            self.learner.batch_size * self.learner.batches_per_call,
            self.replay.samples_per_insert * self.actors.push_every,
        )

    def spi_tolerance(self) -> float:
        """``replay.spi_tolerance``, or when 0 twice the narrowest band that works."""
        return self.replay.spi_tolerance or 2 * self._spi_need()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "env": EnvConfig,
    "network": NetworkConfig,
    "replay": ReplayConfig,
    "actors": ActorConfig,
    "learner": LearnerConfig,
    "eval": EvalConfig,
    "run": RunConfig,
    "security": SecurityConfig,
}
ENV_PREFIX = "DQN_"


def build(values: dict[str, dict[str, Any]]) -> Config:
    """Build a validated Config from nested ``{section: {field: value}}``."""
    actors = values.get("actors")
    if isinstance(actors, dict) and str(actors.get("num_actors", "")).lower() == "auto":
        # ``num_actors = "auto"`` (NUM_ACTORS=auto in compose) means: follow the cluster.
        actors = {k: v for k, v in actors.items() if k != "num_actors"}
        values = {**values, "actors": {**actors, "autoscale": True}}
    sections = {}
    for name, data in values.items():
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a table of fields, got {data!r}")
        known = {f.name for f in dataclasses.fields(SECTIONS[name])}
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"{name}.{key}: unknown field (known: {', '.join(sorted(known))})"
                )
    for name, cls in SECTIONS.items():
        sections[name] = cls(**values.get(name, {}))
    return Config(**sections)


def read_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` from a JSON (``.json``) or TOML (any other suffix)
    file; YAML is refused by its suffix, before the file is read."""
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        raise ConfigError(f"config file {p}: YAML is not supported; use TOML or JSON")
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {p}: {exc}") from None
    return data


def from_environ(environ: typing.Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``DQN_LEARNER__LR=0.001`` -> ``{"learner": {"lr": "0.001"}}``."""
    out: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
        if section not in SECTIONS:
            continue
        out.setdefault(section, {})[name] = value
    return out


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, data in layer.items():
            if isinstance(data, dict):
                out.setdefault(section, {}).update(data)
            else:
                out[section] = data
    return out


def load(
    file: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: typing.Mapping[str, str] | None = None,
    preset: str | None = None,
) -> Config:
    """Defaults < preset < file < environment < overrides (command-line flags)."""
    layers = [presets.values(preset)]
    if file:
        layers.append(read_file(file))
    layers.append(from_environ(os.environ if environ is None else environ))
    if overrides:
        layers.append(overrides)
    return build(merge(*layers))


# The settings people set most, by a short name: ``dqn train --max-seconds`` (dashes)
# and ``dqn.train(max_seconds=...)`` (keyword arguments; ``env`` is its first argument).
SHORT_OPTIONS: dict[str, tuple[str, str]] = {
    "env": ("env", "id"),
    "seed": ("run", "seed"),
    "run_dir": ("run", "dir"),
    "max_seconds": ("run", "max_seconds"),
    "max_env_steps": ("run", "max_env_steps"),
    "max_updates": ("run", "max_updates"),
    "num_actors": ("actors", "num_actors"),
    "device": ("learner", "device"),
}


def iter_fields():
    """Yield ``(section, field, help)`` for every field, for building CLI flags."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield section, f, f.metadata.get("help", "")


def save(config: Config, path: str | os.PathLike) -> None:
    from dqn.files import atomic_write_json

    atomic_write_json(path, config.to_dict())


def ensure_run_dir(path: str | os.PathLike) -> Path:
    """Create ``run.dir`` (with its parents) and check that it takes files; anything
    in the way (a file on the path, no permission, a read-only disk) is a
    :class:`ConfigError` naming ``run.dir``, before any process starts."""
    run_dir = Path(path)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-check.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except (NotADirectoryError, FileExistsError):
        raise ConfigError(
            f"run.dir: {str(run_dir)!r} is under or is a file, not a directory"
        ) from None
    except OSError as exc:
        raise ConfigError(f"run.dir: cannot write to {str(run_dir)!r} ({exc.strerror})") from None
    return run_dir
