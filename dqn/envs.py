"""Environment factory and probe environments for debugging learning code.

The probes isolate one piece of the learner at a time; with discount ``gamma``
their optimal Q-values are known exactly:

========== ======================================= ==============================
id         what it is                               Q* (per observation/action)
========== ======================================= ==============================
Probe1-v0  one obs, one action, one step, r=+1      Q(0)=1
Probe2-v0  obs +-1 at random, one step, r=obs       Q(-1)=-1, Q(+1)=+1
Probe3-v0  two steps (obs 0 then 1), r=+1 at end    Q(0)=gamma, Q(1)=1
Probe4-v0  one obs, two actions, r=-1/+1 by action  Q(0,a0)=-1, Q(0,a1)=+1
Probe5-v0  obs 0/1, two actions, r=+1 if a==obs    Q(o,a)=+1 if a==o else -1
========== ======================================= ==============================
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import threading
import types
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dqn.config import Config, ConfigError, EnvConfig
from dqn.vector_env import LeanVectorEnv


class _Probe(gym.Env):
    metadata = {"render_modes": []}
    n_actions = 1

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(self.n_actions)
        self._obs = 0.0
        self._t = 0

    def _draw(self) -> float:
        return 0.0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._obs = self._draw()
        return np.array([self._obs], dtype=np.float32), {}

    def _reward(self, action: int) -> float:
        return 1.0

    def step(self, action):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action {action} out of range for {type(self).__name__}")
        r = self._reward(action)
        return np.array([self._obs], dtype=np.float32), r, True, False, {}


class Probe1(_Probe):
    """One observation, one action, one step, reward +1: tests the value net alone."""


class Probe2(_Probe):
    """Observation +-1, one step, reward = observation: tests that Q depends on obs."""

    def _draw(self) -> float:
        return float(self.np_random.choice([-1.0, 1.0]))

    def _reward(self, action: int) -> float:
        return self._obs


class Probe3(_Probe):
    """Two steps, reward +1 only at the end: tests discounting and bootstrapping."""

    def step(self, action):
        if self._t == 0:
            self._t, self._obs = 1, 1.0
            return np.array([1.0], dtype=np.float32), 0.0, False, False, {}
        return np.array([self._obs], dtype=np.float32), 1.0, True, False, {}


class Probe4(_Probe):
    """Two actions, reward -1 for action 0 and +1 for action 1: tests the policy."""

    n_actions = 2

    def _reward(self, action: int) -> float:
        return 1.0 if action == 1 else -1.0


class Probe5(_Probe):
    """Observation 0/1, reward +1 when the action matches it: tests obs x action."""

    n_actions = 2

    def _draw(self) -> float:
        return float(self.np_random.integers(0, 2))

    def _reward(self, action: int) -> float:
        return 1.0 if action == int(self._obs) else -1.0


PROBES = {
    "Probe1-v0": (Probe1, 1.0),
    "Probe2-v0": (Probe2, None),
    "Probe3-v0": (Probe3, 1.0),
    "Probe4-v0": (Probe4, 1.0),
    "Probe5-v0": (Probe5, 1.0),
}


def register_probes() -> None:
    for env_id, (cls, threshold) in PROBES.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=cls, max_episode_steps=10, reward_threshold=threshold)


def register_envs() -> None:
    """Register this project's env ids: the probes and ``PixelCartPole-v1``."""
    from dqn.pixels import register_pixels  # imports gymnasium's classic-control CartPole

    register_probes()
    register_pixels()


class EnvError(ConfigError):
    """An env that cannot be built or used; the one-line message starts with the setting
    at fault (``env.id: ...``, ``env.kwargs: ...``, ``env.wrappers: ...``). A
    :class:`~dqn.config.ConfigError` (so a ValueError): entry points that report bad
    settings in one line report these too."""


@dataclass(frozen=True)
class EnvSpec:
    """What the learner and the replay server need to know of an env, instead of it."""

    obs_shape: tuple[int, ...]
    obs_dtype: str  # 'float32' | 'uint8': :func:`wire_dtype` of the observation space
    n_actions: int
    reward_threshold: float | None  # the env's registered reward_threshold, if any


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _import_user_module(name: str, field: str) -> types.ModuleType:
    """Import ``name``; the working directory is searched too (appended to sys.path),
    so a module next to where ``dqn`` runs needs no PYTHONPATH."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(name)
    except Exception as exc:  # anything a module's top level can raise
        raise EnvError(f"{field}: cannot import module {name!r} ({_one_line(exc)})") from None


def _split_path(path: str, field: str) -> tuple[str, str]:
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise EnvError(f"{field}: {path!r} is not an import path 'module:Name'")
    return module, name


def _registered(env_id: str) -> bool:
    try:
        gym.spec(env_id)
    except gym.error.Error:
        return False
    return True


def _make_base(env: EnvConfig, extra: dict) -> gym.Env:
    """The env ``env.id`` names, before ``env.wrappers``."""
    kwargs = {**env.kwargs, **extra}
    env_id = env.id
    register_envs()
    if env.factory:
        return _call_factory(env_id, _factory_for(env), kwargs, env.kwargs)
    if ":" in env_id:
        module_name, name = _split_path(env_id, "env.id")
        module = _import_user_module(module_name, "env.id")
        factory = getattr(module, name, None)
        if callable(factory) and not _registered(name):
            return _call_factory(env_id, factory, kwargs, env.kwargs)
        env_id = name  # gymnasium's 'module:EnvId': importing the module registered it
        try:
            gym.spec(env_id)
        except gym.error.Error as exc:
            raise EnvError(
                f"env.id: {env.id!r}: module {module_name!r} has no callable {name!r} "
                f"and {name!r} is not a registered id ({' '.join(str(exc).split())})"
            ) from None
    else:
        try:
            gym.spec(env_id)
        except gym.error.Error as exc:  # NameNotFound & co., with gymnasium's "Did you mean"
            raise EnvError(f"env.id: {env_id!r}: {' '.join(str(exc).split())}") from None
    try:
        return gym.make(env_id, **kwargs)
    except Exception as exc:
        field = "env.kwargs" if env.kwargs else "env.id"
        raise EnvError(
            f"{field}: gym.make({env_id!r}, **{kwargs!r}) raised {_one_line(exc)}"
        ) from None


_BY_VALUE_LOCK = threading.Lock()


def factory_name(factory) -> str:
    """``module:qualname`` of an env factory (of the function a ``functools.partial``
    wraps): the ``env.id`` that names it, and checks that the two belong together."""
    func = getattr(factory, "func", factory)  # functools.partial
    module = getattr(func, "__module__", None) or "__main__"
    name = getattr(func, "__qualname__", None) or type(func).__name__
    return f"{module}:{name}"


def dump_factory(factory) -> str:
    """``env.factory`` for a callable: its cloudpickle in base64. The callable and
    whatever it uses from the user's own modules (``__main__``, a notebook cell, a
    module next to the script: anything not installed) travel by value, so processes
    that cannot import those modules still rebuild it."""
    import base64

    import cloudpickle

    with _BY_VALUE_LOCK:  # cloudpickle's by-value registry is global
        already = set(cloudpickle.list_registry_pickle_by_value())
        ours = [
            module
            for name, module in list(sys.modules.items())
            if name != "__main__"
            and name not in already
            and getattr(module, "__file__", None)
            and not _installed(name)
        ]
        for module in ours:
            cloudpickle.register_pickle_by_value(module)
        try:
            data = cloudpickle.dumps(factory)
        except Exception as exc:
            raise EnvError(f"env: cannot pickle {factory!r} ({_one_line(exc)})") from None
        finally:
            for module in ours:
                cloudpickle.unregister_pickle_by_value(module)
    return base64.b64encode(data).decode("ascii")


def _installed(module: str) -> bool:
    """Whether ``module`` comes from this project or an installed distribution
    (site-packages, the standard library) rather than the user's own files, which
    other processes may not be able to import."""
    import sysconfig

    top = module.split(".")[0]
    if top in ("dqn", "actors", "learner", "replay_server", "deploy"):
        return True
    path = getattr(sys.modules.get(top), "__file__", None) or ""
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    return not path or any(path.startswith(r) for r in roots)


def load_factory(blob: str):
    import base64
    import pickle

    try:
        factory = pickle.loads(base64.b64decode(blob.encode("ascii"), validate=True))
    except Exception as exc:
        raise EnvError(f"env.factory: cannot unpickle the env factory ({_one_line(exc)})") from None
    if not callable(factory):
        raise EnvError(f"env.factory: unpickled {type(factory).__name__}, not a callable")
    return factory


def _factory_for(env: EnvConfig):
    """The callable of ``env.factory``, which must be the one ``env.id`` names: an id
    changed after the factory was set (``--env`` over a dqn.train run's config) would
    otherwise train the old env under the new name."""
    factory = load_factory(env.factory)
    if factory_name(factory) != env.id:
        raise EnvError(
            f"env.factory: holds {factory_name(factory)!r} but env.id is {env.id!r}; to "
            "use another env, clear env.factory (--env.factory '')"
        )
    return factory


def _call_factory(path: str, factory, kwargs: dict, user_kwargs: dict) -> gym.Env:
    try:
        made = factory(**kwargs)
    except Exception as exc:
        field = "env.kwargs" if user_kwargs else "env.id"
        raise EnvError(f"{field}: {path}(**{kwargs!r}) raised {_one_line(exc)}") from None
    if not isinstance(made, gym.Env):
        raise EnvError(
            f"env.id: {path}(**{kwargs!r}) returned {type(made).__name__}, not a gymnasium Env"
        )
    return made


def _wrap(base: gym.Env, wrappers: tuple[str, ...]) -> gym.Env:
    env = base
    for path in wrappers:
        module_name, name = _split_path(path, "env.wrappers")
        module = _import_user_module(module_name, "env.wrappers")
        wrapper = getattr(module, name, None)
        if not callable(wrapper):
            raise EnvError(f"env.wrappers: module {module_name!r} has no callable {name!r}")
        try:
            wrapped = wrapper(env)
        except Exception as exc:
            raise EnvError(f"env.wrappers: {path}(env) raised {_one_line(exc)}") from None
        if not isinstance(wrapped, gym.Env):
            raise EnvError(
                f"env.wrappers: {path}(env) returned {type(wrapped).__name__}, not a gymnasium Env"
            )
        env = wrapped
    return env


def _check_config(env) -> None:
    if not isinstance(env, EnvConfig):
        raise TypeError(f"expected an EnvConfig (the whole env section), got {env!r}")


def make_env(env: EnvConfig, **extra) -> gym.Env:
    """One env as ``env`` describes it. ``env.id`` is a registered id (this project's
    too), gymnasium's ``'module:EnvId'`` (the module is imported, then ``EnvId`` made)
    or ``'module:factory'``: a class or function of that module returning an Env
    (``module:X`` is a factory when ``X`` is a callable attribute of the module and not
    a registered id). ``env.kwargs``, updated with ``extra`` (e.g.
    ``render_mode='rgb_array'``), go to the factory or to ``gym.make``; then each of
    ``env.wrappers`` (``'module:Name'``) is applied in order as ``Name(env)``. A user
    module is also looked for in the working directory. Raises :class:`EnvError`."""
    _check_config(env)
    return _wrap(_make_base(env, extra), env.wrappers)


def make_vector_env(
    env: EnvConfig, num_envs: int, seed: int | None = None, sync: bool = False
) -> gym.vector.VectorEnv:
    """``num_envs`` :func:`make_env` envs stepped in this process in gymnasium's NEXT_STEP
    autoreset mode: a :class:`dqn.vector_env.LeanVectorEnv` (what actors and evaluators
    step), or with ``sync`` gymnasium's ``SyncVectorEnv`` (the same steps, plus merged
    infos; the reference it is tested against and the raw rate bench/fleet.py shows)."""
    _check_config(env)
    fns = [lambda: make_env(env) for _ in range(num_envs)]
    if sync:
        vec = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    else:
        vec = LeanVectorEnv(fns)
    if seed is not None:
        vec.action_space.seed(seed)
    return vec


def wire_dtype(space: spaces.Space) -> np.dtype:
    """The dtype observations travel, are stored and are sampled in: uint8 for uint8
    observations (images: 4x smaller than float32), float32 for anything else."""
    return np.dtype(np.uint8) if space.dtype == np.uint8 else np.dtype(np.float32)


def _check_spaces(env: gym.Env, field: str) -> None:
    act, obs = env.action_space, env.observation_space
    if not isinstance(act, spaces.Discrete):
        raise EnvError(f"{field}: action space {act} is not Discrete (DQN needs discrete actions)")
    if int(act.start) != 0:
        raise EnvError(f"{field}: action space {act} must start at 0")
    if not isinstance(obs, spaces.Box):
        raise EnvError(f"{field}: observation space {obs} is not a Box")


def env_spec(env: EnvConfig) -> EnvSpec:
    """The spec of the env ``env`` describes, read from one env (then closed). Raises
    :class:`EnvError` when it cannot be built or its spaces are not Discrete actions
    and Box observations (naming ``env.wrappers`` when a wrapper made them so)."""
    _check_config(env)
    base = _make_base(env, {})
    made = base
    try:
        _check_spaces(base, "env.id")
        made = _wrap(base, env.wrappers)
        _check_spaces(made, "env.wrappers")
        spec = getattr(made.unwrapped, "spec", None)  # gym.make's; a factory's has none
        threshold = spec.reward_threshold if spec is not None else None
        return EnvSpec(
            obs_shape=tuple(int(d) for d in made.observation_space.shape),
            obs_dtype=str(wire_dtype(made.observation_space)),
            n_actions=int(made.action_space.n),
            reward_threshold=None if threshold is None else float(threshold),
        )
    finally:
        made.close()


def with_spec(config: Config) -> Config:
    """``config`` with ``env.obs_shape``/``obs_dtype``/``n_actions`` filled from
    :func:`env_spec`, and ``env.solve_threshold`` from its reward threshold when unset.
    Spec fields already set must agree with the env (:class:`EnvError` otherwise)."""
    e = config.env
    spec = env_spec(e)
    for name in ("obs_shape", "obs_dtype", "n_actions"):
        have, got = getattr(e, name), getattr(spec, name)
        if have is not None and have != got:
            show = (lambda v: ",".join(map(str, v))) if name == "obs_shape" else str
            raise EnvError(f"env.{name}: set to {show(have)} but env {e.id!r} has {show(got)}")
    threshold = e.solve_threshold if e.solve_threshold is not None else spec.reward_threshold
    env = dataclasses.replace(
        e,
        obs_shape=spec.obs_shape,
        obs_dtype=spec.obs_dtype,
        n_actions=spec.n_actions,
        solve_threshold=threshold,
    )
    return dataclasses.replace(config, env=env)


def describe(env: EnvConfig) -> str:
    """``env`` in one short line for logs: the id, kwargs and wrappers if any."""
    parts = [env.id]
    if env.kwargs:
        parts.append(json.dumps(env.kwargs, sort_keys=True))
    if env.wrappers:
        parts.append("wrapped by " + ", ".join(env.wrappers))
    return " ".join(parts)
