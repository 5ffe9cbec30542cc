"""deploy.api without running anything: how dqn.train builds its Config, what a
Result offers, and that ``import dqn`` stays light."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import dqn
from deploy.api import Result, make_config
from dqn.config import ConfigError
from dqn.envs import make_env

pytestmark = pytest.mark.unit


def test_short_options_overrides_and_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[learner]\nlr = 0.01\n[run]\nseed = 3\n")
    cfg = make_config(
        "Acrobot-v1",
        config=path,
        seed=7,
        max_seconds=12,
        overrides={"learner.lr": 1e-3, "network.dueling": True},
    )
    assert cfg.env.id == "Acrobot-v1" and cfg.env.factory == ""
    assert cfg.run.seed == 7 and cfg.run.max_seconds == 12  # keyword over the file
    assert cfg.learner.lr == 1e-3 and cfg.network.dueling  # overrides over all


def test_a_config_object_is_a_layer_too():
    base = make_config(max_updates=5)
    assert make_config(config=base).run.max_updates == 5
    assert make_config(config={"run": {"max_updates": 9}}).run.max_updates == 9


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"overrides": {"learner.lr": -1}}, "learner.lr"),
        ({"overrides": {"lr": 1}}, "overrides"),
        ({"overrides": {"learner.nope": 1}}, "learner.nope"),
        ({"max_seconds": 0}, "run.max_seconds"),
        ({"env": 42}, "env"),
    ],
)
def test_bad_settings_raise_one_config_error_naming_them(kwargs, field):
    with pytest.raises(ConfigError) as info:
        make_config(**kwargs)
    assert str(info.value).startswith(field), info.value
    assert "\n" not in str(info.value)


def test_an_unknown_keyword_is_a_type_error_listing_the_short_options():
    with pytest.raises(TypeError, match="max_seconds"):
        make_config(max_second=10)


class LocalEnv(gym.Env):
    """An env class defined in a test module (not installed): travels by value."""

    observation_space = gym.spaces.Box(0.0, 1.0, (3,), "float32")
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 1.0, True, False, {}


def _build_elsewhere(config_dict: dict) -> str:
    """Rebuild the env from the config alone in a fresh interpreter that cannot import
    this test module (cwd /, no tests/ on its path), as an actor process would."""
    code = (
        "import json, sys; from dqn.config import build; from dqn.envs import make_env; "
        "env = make_env(build(json.loads(sys.stdin.read())).env); "
        "print(env.observation_space.shape, env.action_space.n)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(config_dict), capture_output=True,
        text=True, cwd="/", env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_a_callable_env_travels_in_the_config_by_value():
    cfg = make_config(LocalEnv)
    assert cfg.env.id == f"{__name__}:LocalEnv" and cfg.env.factory
    assert make_env(cfg.env).observation_space.shape == (3,)
    assert _build_elsewhere(cfg.to_dict()) == "(3,) 3"


def test_a_lambda_over_a_local_class_takes_the_class_along():
    cfg = make_config(lambda: LocalEnv())
    assert cfg.env.id.endswith(":<lambda>") or ".<lambda>" in cfg.env.id
    assert _build_elsewhere(cfg.to_dict()) == "(3,) 3"


def test_a_factory_and_an_id_that_disagree_are_refused():
    from dqn.envs import EnvError

    cfg = make_config(LocalEnv)
    other = dataclasses.replace(cfg.env, id="CartPole-v1")  # --env over a dqn.train run
    with pytest.raises(EnvError, match="env.factory: holds .*LocalEnv.* but env.id is"):
        make_env(other)


def test_result_exposes_the_summary_fields(tmp_path):
    result = Result(tmp_path, {"solved": True, "seconds_to_solve": 9.1, "eval_mean": 500.0}, 0)
    assert result.solved and result.seconds_to_solve == 9.1
    assert "eval_mean" in dir(result)
    with pytest.raises(AttributeError, match="summary fields"):
        _ = result.no_such_field
    assert result.policy_path is None


def test_import_dqn_does_not_import_the_parts():
    code = (
        "import sys, dqn; dqn.__version__; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('deploy', 'learner', 'actors', 'replay_server', 'ray', 'torch', 'gymnasium')]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    assert callable(dqn.train) and callable(dqn.load_policy)
    assert Path(dqn.__file__).parent.name == "dqn"


@pytest.mark.parametrize("command", ["actors", "evaluator"])
def test_a_callable_env_cannot_go_to_a_cluster_service(command, capsys):
    from deploy import cli

    blob = make_config(LocalEnv).env.factory
    args = [command, "--weights-address", "127.0.0.1:1", "--env.factory", blob]
    if command == "actors":
        args += ["--replay-address", "127.0.0.1:1"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "env.factory" in err and "dqn.train" in err, err
