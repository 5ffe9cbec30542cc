"""dqn.envs: the three env id forms, kwargs, wrappers, a module found in the working
directory, the spec and with_spec, and each error as one line naming the setting.
Real gymnasium envs and a real user module (tests/user_envs.py, and modules written to
a temporary working directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqn.config import Config, EnvConfig, save
from dqn.envs import EnvError, EnvSpec, describe, env_spec, make_env, make_vector_env, with_spec
from tests import user_envs

pytestmark = pytest.mark.unit

# Wrappers whose order shows in the reward: Double then AddOne pays 2r + 1, the other way
# round 2(r + 1); and one that makes the observation space a Discrete.
WRAPPERS_SOURCE = """
import gymnasium as gym
from gymnasium import spaces


class Double(gym.RewardWrapper):
    def reward(self, reward):
        return 2 * reward


class AddOne(gym.RewardWrapper):
    def reward(self, reward):
        return reward + 1


class ToDiscrete(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = spaces.Discrete(2)

    def observation(self, obs):
        return 0


def not_an_env(**kwargs):
    return 42


def two_line_failure(**kwargs):
    raise RuntimeError("first line\\nsecond line")
"""


@pytest.fixture
def cwd_module(tmp_path, monkeypatch):
    """A fresh module in a temporary working directory that is not on sys.path."""
    name = f"cwd_env_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        WRAPPERS_SOURCE + "\nfrom tests.user_envs import TargetEnv as Local\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def best_action(obs: np.ndarray) -> int:
    return int(np.argmax(obs))


def play(env: gym.Env, policy, seed: int = 0) -> tuple[float, int]:
    """Return and length of one episode."""
    obs, _ = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total += float(reward)
        steps += 1
        done = terminated or truncated
    return total, steps


def error_of(env: EnvConfig, field: str, build=env_spec) -> str:
    with pytest.raises(EnvError) as info:
        build(env)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{field}: "), message
    return message


# --- the three id forms ------------------------------------------------------------


def test_registered_id_and_project_ids():
    assert env_spec(EnvConfig(id="CartPole-v1")) == EnvSpec((4,), "float32", 2, 475.0)
    assert env_spec(EnvConfig(id="Probe5-v0")) == EnvSpec((1,), "float32", 2, 1.0)
    env = make_env(EnvConfig(id="CartPole-v1"))
    assert env.spec.id == "CartPole-v1"
    env.close()


def test_gymnasium_module_env_id_imports_then_makes():
    env = EnvConfig(id=f"tests.user_envs:{user_envs.REGISTERED_ID}")
    assert env_spec(env) == EnvSpec((3,), "float32", 3, 4.5)
    made = make_env(env)
    assert made.spec.id == user_envs.REGISTERED_ID
    assert play(made, best_action) == (5.0, 5)  # the registered kwargs: length 5
    made.close()
    # gymnasium's own module of CartPole: an id, although the module has attributes
    assert env_spec(EnvConfig(id="gymnasium.envs.classic_control:CartPole-v1")).n_actions == 2


def test_factory_function_gets_kwargs():
    env = EnvConfig(id="tests.user_envs:make_target", kwargs={"length": 2, "n_actions": 4})
    assert env_spec(env) == EnvSpec((4,), "float32", 4, None)  # no registry, no threshold
    made = make_env(env)
    assert isinstance(made.unwrapped, user_envs.TargetEnv)
    assert play(made, best_action) == (2.0, 2)
    assert play(made, lambda obs: (best_action(obs) + 1) % 4) == (0.0, 2)
    made.close()


def test_factory_class_gets_kwargs():
    made = make_env(EnvConfig(id="tests.user_envs:TargetEnv", kwargs={"length": 3}))
    assert type(made) is user_envs.TargetEnv
    assert play(made, best_action) == (3.0, 3)


def test_kwargs_go_to_gym_make():
    env = EnvConfig(id=f"tests.user_envs:{user_envs.REGISTERED_ID}", kwargs={"length": 7})
    assert play(make_env(env), best_action) == (7.0, 7)
    cart = make_env(EnvConfig(id="CartPole-v1", kwargs={"max_episode_steps": 3}))
    assert play(cart, lambda obs: 0)[1] <= 3 and cart.spec.max_episode_steps == 3


def test_extra_kwargs_merge_over_the_configured_ones():
    env = EnvConfig(id="tests.user_envs:make_target", kwargs={"length": 2, "n_actions": 3})
    assert make_env(env, n_actions=5).action_space.n == 5
    cart = make_env(EnvConfig(id="CartPole-v1"), render_mode="rgb_array")
    assert cart.render_mode == "rgb_array"
    cart.close()


def test_wrappers_apply_in_order(cwd_module):
    target = "tests.user_envs:make_target"
    forward = EnvConfig(id=target, wrappers=(f"{cwd_module}:Double", f"{cwd_module}:AddOne"))
    reverse = EnvConfig(id=target, wrappers=(f"{cwd_module}:AddOne", f"{cwd_module}:Double"))
    assert play(make_env(forward), best_action) == (5 * (2 * 1 + 1), 5)
    assert play(make_env(reverse), best_action) == (5 * 2 * (1 + 1), 5)
    assert play(make_env(forward), lambda obs: (best_action(obs) + 1) % 3) == (5 * 1, 5)
    made = make_env(forward)
    assert type(made).__name__ == "AddOne" and type(made.env).__name__ == "Double"


def test_user_wrapper_on_a_registered_env():
    env = EnvConfig(id="Probe1-v0", wrappers=("tests.user_envs:RewardScale",))
    assert play(make_env(env), lambda obs: 0) == (2.0, 1)
    assert env_spec(env) == EnvSpec((1,), "float32", 1, 1.0)  # threshold: the registry's


def test_vector_env_of_a_wrapped_factory():
    env = EnvConfig(
        id="tests.user_envs:make_target",
        kwargs={"length": 3, "n_actions": 2},
        wrappers=("tests.user_envs:RewardScale",),
    )
    vec = make_vector_env(env, 4, seed=1)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (4, 2) and obs.dtype == np.float32
    total = np.zeros(4)
    for t in range(3):
        obs, reward, terminated, truncated, _ = vec.step(obs.argmax(axis=1))
        total += reward
        assert terminated.all() == (t == 2) and not truncated.any()
    assert total.tolist() == [6.0] * 4
    vec.close()


def test_describe_names_kwargs_and_wrappers():
    assert describe(EnvConfig()) == "CartPole-v1"
    text = describe(
        EnvConfig(id="m:f", kwargs={"length": 3}, wrappers=("m:W1", "m:W2")),
    )
    assert text == 'm:f {"length": 3} wrapped by m:W1, m:W2'


# --- a module in the working directory ------------------------------------------------


def test_module_in_cwd_found_without_pythonpath(cwd_module, tmp_path):
    env = EnvConfig(id=f"{cwd_module}:Local", kwargs={"length": 2})
    assert play(make_env(env), best_action) == (2.0, 2)
    assert sys.path[-1] == str(tmp_path)  # appended, at the end


def test_module_in_cwd_found_in_a_fresh_process(tmp_path):
    name = f"fresh_env_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("from tests.user_envs import make_target as factory\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(user_envs.__file__)))
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.append({repo!r})  # for tests.user_envs only: the factory's own import
        assert importlib.util.find_spec({name!r}) is None, "cwd is already on the path"
        from dqn.config import EnvConfig
        from dqn.envs import env_spec
        print(env_spec(EnvConfig(id="{name}:factory", kwargs={{"n_actions": 4}})))
    """)
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -P: no script or cwd entry at sys.path[0], as under the ``dqn`` console script
    done = subprocess.run(
        [sys.executable, "-P", "-c", code],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "obs_shape=(4,)" in done.stdout and "n_actions=4" in done.stdout


def test_dqn_evaluate_plays_the_runs_user_env_from_cwd(cwd_module, tmp_path):
    """deploy.evaluate builds the env from config.json (id, kwargs, wrappers), the module
    coming from the working directory; an oracle policy (Q = obs) plays optimally."""
    from deploy.evaluate import evaluate_run

    run = tmp_path / "run"
    run.mkdir()
    env = EnvConfig(
        id=f"{cwd_module}:Local", kwargs={"length": 3}, wrappers=("tests.user_envs:RewardScale",)
    )
    save(Config(env=env), run / "config.json")
    from dqn import policy_file

    # Q = obs exactly: hidden [relu(x), relu(-x)], head relu(x) - relu(-x)
    eye = torch.eye(3)
    oracle = {"body.1.weight": torch.cat([eye, -eye]), "body.1.bias": torch.zeros(6)}
    oracle |= {"head.weight": torch.cat([eye, -eye], dim=1), "head.bias": torch.zeros(3)}
    info = policy_file.PolicyInfo((3,), "float32", 3, {"hidden": [6], "dueling": False}, "Local")
    policy_file.save(run / "policy.safetensors", oracle, info)
    result = evaluate_run(str(run), episodes=4, seed=3)
    assert result["returns"] == [6.0] * 4  # 3 steps x reward 1 x scale 2
    # --env replaces the id only: kwargs and the wrapper stay
    result = evaluate_run(str(run), episodes=2, seed=3, env_id="tests.user_envs:make_target")
    assert result["env_id"] == "tests.user_envs:make_target" and result["mean"] == 6.0


# --- errors: one line, naming the setting ---------------------------------------------


def test_module_that_does_not_import():
    message = error_of(EnvConfig(id="no_such_module_dqn:make"), "env.id")
    assert "'no_such_module_dqn'" in message and "ModuleNotFoundError" in message


def test_module_that_raises_on_import(tmp_path, monkeypatch):
    name = f"broken_env_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('top level\\nfailure')\n")
    monkeypatch.chdir(tmp_path)
    message = error_of(EnvConfig(id=f"{name}:make"), "env.id")
    assert f"cannot import module {name!r}" in message
    assert "RuntimeError: top level failure" in message


def test_unknown_id_says_did_you_mean():
    message = error_of(EnvConfig(id="CartPol-v1"), "env.id")
    assert "Did you mean" in message and "CartPole" in message
    message = error_of(EnvConfig(id="CartPole-v99"), "env.id", build=make_env)
    assert "v99" in message


def test_module_without_that_factory_or_id():
    message = error_of(EnvConfig(id="tests.user_envs:make_targett"), "env.id")
    assert "no callable 'make_targett'" in message and "not a registered id" in message


def test_action_space_not_discrete():
    message = error_of(EnvConfig(id="MountainCarContinuous-v0"), "env.id")
    assert "action space Box" in message and "not Discrete" in message


def test_observation_space_not_a_box():
    message = error_of(EnvConfig(id="Blackjack-v1"), "env.id")
    assert "observation space Tuple" in message and "not a Box" in message


def test_wrapper_that_makes_the_observation_not_a_box(cwd_module):
    env = EnvConfig(id="CartPole-v1", wrappers=(f"{cwd_module}:ToDiscrete",))
    message = error_of(env, "env.wrappers")
    assert "observation space Discrete(2) is not a Box" in message


def test_factory_that_raises_on_its_kwargs():
    env = EnvConfig(id="tests.user_envs:make_target", kwargs={"length": 0})
    message = error_of(env, "env.kwargs")
    assert "tests.user_envs:make_target(**{'length': 0})" in message
    assert "ValueError: length must be an integer >= 1, got 0" in message
    env = EnvConfig(id="tests.user_envs:TargetEnv", kwargs={"lenght": 3})
    message = error_of(env, "env.kwargs", build=make_env)
    assert "TypeError" in message and "lenght" in message


def test_factory_error_text_kept_on_one_line(cwd_module):
    message = error_of(EnvConfig(id=f"{cwd_module}:two_line_failure"), "env.id")
    assert "RuntimeError: first line second line" in message


def test_gym_make_that_raises_on_kwargs():
    message = error_of(EnvConfig(id="CartPole-v1", kwargs={"no_such_arg": 1}), "env.kwargs")
    assert "gym.make('CartPole-v1', **{'no_such_arg': 1})" in message and "TypeError" in message


def test_factory_returning_something_else(cwd_module):
    message = error_of(EnvConfig(id=f"{cwd_module}:not_an_env"), "env.id")
    assert "returned int, not a gymnasium Env" in message


@pytest.mark.parametrize(
    ("wrapper", "expected"),
    [
        ("no_such_wrapper_module_dqn:W", "cannot import module 'no_such_wrapper_module_dqn'"),
        ("RewardScale", "'RewardScale' is not an import path 'module:Name'"),
        ("tests.user_envs:NoSuchWrapper", "'tests.user_envs' has no callable 'NoSuchWrapper'"),
    ],
)
def test_wrapper_that_does_not_import(wrapper, expected):
    env = EnvConfig(id="CartPole-v1", wrappers=(wrapper,))
    assert expected in error_of(env, "env.wrappers")
    assert expected in error_of(env, "env.wrappers", build=make_env)


def test_an_id_string_is_refused():
    with pytest.raises(TypeError, match="EnvConfig"):
        make_env("CartPole-v1")


# --- with_spec ------------------------------------------------------------------------


def test_with_spec_fills_the_spec_and_the_threshold():
    config = with_spec(Config())
    e = config.env
    assert (e.obs_shape, e.obs_dtype, e.n_actions, e.solve_threshold) == ((4,), "float32", 2, 475.0)
    assert e.has_spec and config.learner == Config().learner
    kept = with_spec(Config(env=EnvConfig(solve_threshold=200.0)))
    assert kept.env.solve_threshold == 200.0
    factory = with_spec(Config(env=EnvConfig(id="tests.user_envs:make_target")))
    assert factory.env.n_actions == 3 and factory.env.solve_threshold is None
    # spec fields already set and agreeing are accepted; the result round-trips JSON
    again = with_spec(config)
    assert again == config
    assert json.loads(json.dumps(config.to_dict()))["env"]["obs_shape"] == [4]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("obs_shape", (5,), "env.obs_shape: set to 5 but env 'CartPole-v1' has 4"),
        ("obs_dtype", "uint8", "env.obs_dtype: set to uint8 but env 'CartPole-v1' has float32"),
        ("n_actions", 3, "env.n_actions: set to 3 but env 'CartPole-v1' has 2"),
    ],
)
def test_with_spec_refuses_spec_fields_that_disagree(field, value, expected):
    config = Config(env=EnvConfig(**{field: value}))
    with pytest.raises(EnvError) as info:
        with_spec(config)
    assert str(info.value) == expected
