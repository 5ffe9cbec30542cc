"""dqn.config: defaults, validation with field names, file/env/flag layering."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dqn import config as C
from dqn.config import Config, ConfigError, build, load

pytestmark = pytest.mark.unit


def test_defaults_build_and_are_frozen():
    cfg = build({})
    assert isinstance(cfg, Config)
    assert cfg.env.id == "CartPole-v1"
    assert cfg.learner.lr == C.LearnerConfig().lr > 0
    assert cfg.replay.min_size <= cfg.replay.capacity
    assert cfg == Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.learner.lr = 1.0  # type: ignore[misc]


def test_every_field_has_help_text():
    fields = list(C.iter_fields())
    assert len(fields) > 30
    for section, f, help_text in fields:
        assert help_text, f"{section}.{f.name} has no help"


@pytest.mark.parametrize(
    "values, field",
    [
        ({"learner": {"lr": -0.1}}, "learner.lr:"),
        ({"learner": {"lr": 0}}, "learner.lr:"),
        ({"learner": {"lr": float("nan")}}, "learner.lr:"),
        ({"learner": {"lr": float("inf")}}, "learner.lr:"),
        ({"learner": {"lr": "fast"}}, "learner.lr:"),
        ({"learner": {"gamma": 1.5}}, "learner.gamma:"),
        ({"learner": {"batch_size": 0}}, "learner.batch_size:"),
        ({"learner": {"batch_size": 2.5}}, "learner.batch_size:"),
        ({"learner": {"batch_size": True}}, "learner.batch_size:"),
        ({"learner": {"batch_size": "many"}}, "learner.batch_size:"),
        ({"learner": {"double_dqn": "maybe"}}, "learner.double_dqn:"),
        ({"learner": {"target_update": "soft"}}, "learner.target_update:"),
        ({"learner": {"device": "tpu"}}, "learner.device:"),
        ({"learner": {"tau": 0}}, "learner.tau:"),
        ({"actors": {"epsilon": "boltzmann"}}, "actors.epsilon:"),
        ({"actors": {"eps_start": 1.1}}, "actors.eps_start:"),
        ({"actors": {"num_actors": 0}}, "actors.num_actors:"),
        ({"replay": {"capacity": 10, "min_size": 11}}, "replay.min_size:"),
        ({"replay": {"capacity": 0}}, "replay.capacity:"),
        ({"replay": {"port": 70000}}, "replay.port:"),
        ({"replay": {"max_message_mb": 0}}, "replay.max_message_mb:"),
        ({"network": {"hidden": [64, 0]}}, "network.hidden:"),
        ({"network": {"hidden": []}}, "network.hidden:"),
        ({"run": {"seed": -1}}, "run.seed:"),
        ({"env": {"id": 3}}, "env.id:"),
        ({"learner": {"momentum": 0.9}}, "learner.momentum:"),
        ({"optimizer": {"lr": 0.1}}, "optimizer:"),
        ({"learner": 0.1}, "learner:"),
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as err:
        build(values)
    assert str(err.value).startswith(field), str(err.value)


def test_error_messages_are_helpful():
    with pytest.raises(ConfigError, match=r"^actors\.epsilon: must be one of \['linear', 'apex'\]"):
        build({"actors": {"epsilon": "boltzmann"}})
    with pytest.raises(ConfigError, match=r"^learner\.lr: must be > 0, got -0\.1"):
        build({"learner": {"lr": -0.1}})
    with pytest.raises(ConfigError, match=r"^learner\.lr: expected float, got 'fast'"):
        build({"learner": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"unknown field"):
        build({"learner": {"momentum": 0.9}})
    with pytest.raises(ConfigError, match=r"unknown section"):
        build({"optimizer": {}})


def test_strings_are_coerced_like_flags_and_env_vars():
    cfg = build(
        {
            "learner": {"lr": "0.005", "batch_size": "1_024", "double_dqn": "false"},
            "network": {"hidden": "32, 16"},
            "env": {"solve_threshold": "none"},
            "eval": {"episodes": "7"},
        }
    )
    assert cfg.learner.lr == pytest.approx(0.005)
    assert cfg.learner.batch_size == 1024
    assert cfg.learner.double_dqn is False
    assert cfg.network.hidden == (32, 16)
    assert cfg.env.solve_threshold is None
    assert cfg.eval.episodes == 7
    assert build({"env": {"solve_threshold": "150"}}).env.solve_threshold == pytest.approx(150.0)


def test_deadlocking_rate_limiter_is_refused():
    values = {
        "replay": {"samples_per_insert": 4.0, "spi_tolerance": 100.0},
        "learner": {"batch_size": 32, "batches_per_call": 4},  # one call samples 128
        "actors": {"push_every": 16},
    }
    with pytest.raises(ConfigError) as err:
        build(values)
    msg = str(err.value)
    assert msg.startswith("replay.spi_tolerance:")
    assert "deadlock" in msg and "128" in msg
    values["actors"]["push_every"] = 64  # one push = 256 sampled transitions
    values["replay"]["spi_tolerance"] = 200.0
    with pytest.raises(ConfigError, match=r"^replay\.spi_tolerance:.*256"):
        build(values)
    values["replay"]["spi_tolerance"] = 256.0
    assert build(values).replay.spi_tolerance == 256.0


def test_spi_zero_needs_no_tolerance():
    cfg = build({"replay": {"samples_per_insert": 0, "spi_tolerance": 0}})
    assert cfg.replay.samples_per_insert == 0


def test_env_var_override():
    cfg = load(
        environ={
            "DQN_LEARNER__LR": "0.0025",
            "DQN_REPLAY__CAPACITY": "5000",
            "HOME": "/x",
            "DQN_UNRELATED": "1",
        }
    )
    assert cfg.learner.lr == pytest.approx(0.0025)
    assert cfg.replay.capacity == 5000


def test_env_var_bad_value_names_field():
    with pytest.raises(ConfigError, match=r"^learner\.lr:"):
        load(environ={"DQN_LEARNER__LR": "abc"})
    with pytest.raises(ConfigError, match=r"^learner\.nope:"):
        load(environ={"DQN_LEARNER__NOPE": "1"})


def test_process_environment_is_read(monkeypatch):
    monkeypatch.setenv("DQN_LEARNER__LR", "0.125")
    assert load().learner.lr == pytest.approx(0.125)


def test_toml_file_and_layering(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[env]\nid = "Acrobot-v1"\n\n'
        "[learner]\nlr = 0.0003\nbatch_size = 64\n\n"
        "[network]\nhidden = [64, 64]\n"
    )
    cfg = load(str(path), environ={})
    assert cfg.env.id == "Acrobot-v1"
    assert cfg.learner.lr == pytest.approx(3e-4)
    assert cfg.learner.batch_size == 64
    assert cfg.network.hidden == (64, 64)
    # defaults < file < env < overrides
    cfg = load(
        str(path),
        overrides={"learner": {"batch_size": 16}},
        environ={"DQN_LEARNER__LR": "0.01", "DQN_LEARNER__BATCH_SIZE": "32"},
    )
    assert cfg.learner.lr == pytest.approx(0.01)
    assert cfg.learner.batch_size == 16
    assert cfg.env.id == "Acrobot-v1"


def test_toml_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[learner]\nlr = -1.0\n")
    with pytest.raises(ConfigError, match=r"^learner\.lr:"):
        load(str(bad), environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[learner\nlr = 1\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        load(str(broken), environ={})
    with pytest.raises(ConfigError, match="missing.toml"):
        load(str(tmp_path / "missing.toml"), environ={})


def test_save_and_reload_json(tmp_path):
    cfg = build({"learner": {"lr": 0.002}, "network": {"hidden": [8]}})
    path = tmp_path / "config.json"
    C.save(cfg, path)
    assert json.loads(path.read_text())["learner"]["lr"] == pytest.approx(0.002)
    assert load(str(path), environ={}) == cfg


@pytest.mark.parametrize("name", ["settings.yaml", "settings.YML"])
def test_yaml_is_refused_by_its_suffix_before_reading(tmp_path, name):
    path = tmp_path / name  # need not exist: refused by name, not by a parse error
    with pytest.raises(ConfigError, match=r"YAML is not supported; use TOML or JSON$"):
        load(str(path), environ={})


def test_config_imports_presets_and_not_the_other_way():
    """No import cycle: dqn.config applies presets (load(preset=...)); dqn.presets needs
    only the error type, from dqn.errors, which imports nothing of the project."""
    import subprocess
    import sys

    code = (
        "import sys, dqn.presets\n"
        "try:\n    dqn.presets.values('nope')\nexcept ValueError:\n    pass\n"
        "assert 'dqn.config' not in sys.modules, 'presets imported config'\n"
        "import dqn.errors, dqn.config; "
        "assert dqn.config.ConfigError is dqn.presets.ConfigError is dqn.errors.ConfigError"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ConfigError, match="preset: unknown preset 'x'"):
        load(preset="x", environ={})
