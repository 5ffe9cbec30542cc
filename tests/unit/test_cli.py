"""The `dqn` command line: each option once in --help with a typed metavar and one
default, --x / --no-x booleans, no abbreviations, --version, and bad settings named
as the user gave them (the flag as typed, or the environment variable)."""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata

import pytest

from deploy import cli
from dqn import config as config_mod

pytestmark = pytest.mark.unit

CONFIG_COMMANDS = ("train", "replay-server", "learner", "actors", "evaluator", "env-spec")


def _sub(name: str):
    return cli.build_parser().dqn_commands[name]


def _options(help_text: str) -> list[tuple[str, list[str], str]]:
    """(invocation, spellings, help) of each option listed in a --help text."""
    found: list[tuple[str, list[str], str]] = []
    current = None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            invocation, _, rest = line.strip().partition("  ")
            spellings = [w.rstrip(",") for w in invocation.split() if w.startswith("-")]
            current = [invocation, spellings, rest.strip()]
            found.append(current)
        elif current is not None and line.startswith(" " * 8):
            current[2] = f"{current[2]} {line.strip()}".strip()
        else:  # a blank line, a group's heading, the epilog
            current = None
    return [tuple(o) for o in found]


def _config_flags(help_text: str) -> dict[str, tuple[str, str]]:
    """Long flag of each config field -> (its invocation, its help)."""
    out = {}
    for invocation, spellings, text in _options(help_text):
        for s in spellings:
            if re.fullmatch(r"--[a-z]+\.[a-z0-9-]+", s):
                out[s] = (invocation, text)
    return out


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_each_option_is_listed_once(command):
    text = _sub(command).format_help()
    spellings = [s for _, names, _ in _options(text) for s in names]
    assert len(spellings) == len(set(spellings)), sorted(
        s for s in spellings if spellings.count(s) > 1
    )
    flags = _config_flags(text)
    for section, f, _ in config_mod.iter_fields():
        assert f"--{section}.{f.name.replace('_', '-')}" in flags, f"{section}.{f.name}"
    # one spelling per field is shown: the dashed one (the field's own is accepted silently)
    assert "--run.max_seconds" not in text and "--learner.double_dqn" not in text
    assert " V," not in text and " V\n" not in text  # no untyped metavars left


def test_aliases_are_the_long_option_spelled_short():
    flags = _config_flags(_sub("train").format_help())
    for (section, name), alias in cli.ALIASES.items():
        invocation, _ = flags[f"--{section}.{name.replace('_', '-')}"]
        assert invocation.startswith(f"--{alias}, --{section}."), invocation
    assert flags["--run.seed"][0] == "--seed, --run.seed INT"
    assert flags["--run.dir"][0] == "--run-dir, --run.dir PATH"
    assert flags["--actors.num-actors"][0] == "--num-actors, --actors.num-actors INT|auto"


@pytest.mark.parametrize(
    "flag, invocation",
    [
        ("--learner.lr", "--learner.lr FLOAT"),
        ("--replay.capacity", "--replay.capacity INT"),
        ("--learner.target-update", "--learner.target-update {polyak,hard}"),
        ("--actors.epsilon", "--actors.epsilon {linear,apex}"),
        ("--network.hidden", "--network.hidden INT,INT"),
        ("--env.obs-shape", "--env.obs-shape INT,INT"),
        ("--env.wrappers", "--env.wrappers STR,STR"),
        ("--env.kwargs", "--env.kwargs JSON"),
        ("--replay.host", "--replay.host STR"),
        ("--env.solve-threshold", "--env.solve-threshold FLOAT"),
        ("--security.token-file", "--security.token-file PATH"),
        ("--replay.checkpoint-path", "--replay.checkpoint-path PATH"),
        ("--network.dueling", "--network.dueling, --no-network.dueling"),
        ("--run.stop-when-solved", "--run.stop-when-solved, --no-run.stop-when-solved"),
    ],
)
def test_metavars_are_typed(flag, invocation):
    assert _config_flags(_sub("train").format_help())[flag][0] == invocation


@pytest.mark.parametrize("command", [*CONFIG_COMMANDS, "evaluate", "health"])
def test_each_option_shows_at_most_one_default(command):
    for invocation, _, text in _options(_sub(command).format_help()):
        assert text.count("default") <= 1, (invocation, text)
    for flag, (_, text) in _config_flags(_sub(command).format_help()).items():
        assert text.count("default") == 1, (flag, text)


def test_defaults_shown_are_the_configs():
    flags = _config_flags(_sub("train").format_help())
    assert flags["--learner.lr"][1].endswith("(default: 0.0025)")
    assert flags["--network.hidden"][1].endswith("(default: 128,128)")
    assert flags["--network.dueling"][1].endswith("(default: false)")
    assert flags["--learner.double-dqn"][1].endswith("(default: true)")
    assert flags["--run.dir"][1].endswith("(default: runs/latest)")
    assert "(default: the env's reward_threshold)" in flags["--env.solve-threshold"][1]


def test_help_is_grouped_by_section():
    text = _sub("train").format_help()
    headings = re.findall(r"^\[(\w+)\] settings:$", text, re.M)
    assert headings == list(config_mod.SECTIONS)
    env_part = text.split("[env] settings:")[1].split("[network] settings:")[0]
    assert "--env, --env.id STR" in env_part and "--learner." not in env_part


def _config(argv: list[str], monkeypatch, environ: dict | None = None) -> config_mod.Config:
    for key in list(os.environ):
        if key.startswith("DQN_"):
            monkeypatch.delenv(key)
    for key, value in (environ or {}).items():
        monkeypatch.setenv(key, value)
    return cli.load_config(cli.parse_args(["train", *argv]))


@pytest.mark.parametrize(
    "argv, dueling",
    [
        ([], False),
        (["--network.dueling"], True),
        (["--network.dueling", "--learner.lr", "0.001"], True),  # a bare flag before another
        (["--network.dueling", "true"], True),
        (["--network.dueling", "false"], False),
        (["--network.dueling=no"], False),
        (["--no-network.dueling"], False),
        (["--preset", "rainbow-lite"], True),
        (["--preset", "rainbow-lite", "--no-network.dueling"], False),
        (["--network.dueling", "--no-network.dueling"], False),  # the last one wins
        (["--network.dueling"], True),
    ],
)
def test_booleans_are_flags_with_a_no_form(argv, dueling, monkeypatch):
    assert _config(argv, monkeypatch).network.dueling is dueling


def test_no_form_takes_no_value(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["train", "--no-network.dueling=true"])
    assert exc.value.code == 2
    assert "--no-network.dueling takes no value" in capsys.readouterr().err


def test_environment_and_file_still_set_booleans_and_flags_win(monkeypatch, tmp_path):
    env = {"DQN_NETWORK__DUELING": "true", "DQN_LEARNER__DOUBLE_DQN": "false"}
    cfg = _config([], monkeypatch, env)
    assert cfg.network.dueling is True and cfg.learner.double_dqn is False
    cfg = _config(["--no-network.dueling", "--learner.double-dqn"], monkeypatch, env)
    assert cfg.network.dueling is False and cfg.learner.double_dqn is True
    path = tmp_path / "c.toml"
    path.write_text("[network]\ndueling = true\n[run]\nmax_seconds = 7\n")
    cfg = _config(["--config", str(path)], monkeypatch)
    assert cfg.network.dueling is True and cfg.run.max_seconds == 7.0


def test_the_fields_own_spelling_is_accepted(monkeypatch):
    cfg = _config(["--run.max_seconds", "5", "--no-learner.double_dqn"], monkeypatch)
    assert cfg.run.max_seconds == 5.0 and cfg.learner.double_dqn is False
    cfg = _config(["--max-seconds", "6", "--env", "Acrobot-v1", "--seed", "3"], monkeypatch)
    assert (cfg.run.max_seconds, cfg.env.id, cfg.run.seed) == (6.0, "Acrobot-v1", 3)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["train", "--max-second", "40"], "(did you mean --max-seconds?)"),
        (["train", "--learner.l", "1"], "unrecognized arguments: --learner.l 1"),
        (["train", "--conf", "x.toml"], "unrecognized arguments: --conf x.toml"),
        (["evaluate", "runs/x", "--episode", "3"], "(did you mean --episodes?)"),
        (["health", "127.0.0.1:1", "--time", "1"], "unrecognized arguments: --time 1"),
    ],
)
def test_abbreviations_are_refused_in_the_subcommands_usage(argv, says, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"usage: dqn {argv[0]} "), lines
    assert lines[-1].startswith(f"dqn {argv[0]}: error: ") and says in lines[-1], lines
    assert sum("error" in line for line in lines) == 1


def test_abbreviations_are_refused_by_the_top_level_and_fleet_control(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--vers"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["actors", "status", "--fleet-addr", "127.0.0.1:1"])
    assert exc.value.code == 2
    assert "--fleet-addr" in capsys.readouterr().err


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dqn {metadata.version('distributed-dqn')}"


def test_version_without_metadata_falls_back_to_the_package(monkeypatch):
    import dqn

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert cli.version() == dqn.__version__


@pytest.mark.parametrize(
    "argv, environ, expected",
    [
        (["--max-seconds", "-1"], {}, "--max-seconds: must be > 0, got -1.0"),
        (["--run.max-seconds", "-1"], {}, "--run.max-seconds: must be > 0, got -1.0"),
        (["--run.max_seconds", "-1"], {}, "--run.max_seconds: must be > 0, got -1.0"),
        ([], {"DQN_RUN__MAX_SECONDS": "-1"}, "DQN_RUN__MAX_SECONDS: must be > 0, got -1.0"),
        (
            ["--max-seconds", "-2"],
            {"DQN_RUN__MAX_SECONDS": "-1"},
            "--max-seconds: must be > 0, got -2.0",
        ),
        (["--network.dueling", "maybe"], {}, "--network.dueling: expected bool, got 'maybe'"),
        (["--replay.min-size", "5", "--replay.capacity", "2"], {}, "--replay.min-size: 5 exceeds"),
        (["--replay.capacity", "2"], {}, "replay.min_size: 1000 exceeds replay.capacity 2"),
    ],
)
def test_a_bad_setting_is_named_as_given(argv, environ, expected, monkeypatch):
    with pytest.raises(config_mod.ConfigError) as exc:
        _config(argv, monkeypatch, environ)
    args = cli.parse_args(["train", *argv])
    assert cli.setting_error(str(exc.value), args).startswith(expected)


def test_a_config_file_error_names_config(tmp_path):
    args = cli.parse_args(["train", "--config", str(tmp_path / "c.yml")])
    with pytest.raises(config_mod.ConfigError) as exc:
        cli.load_config(args)
    assert cli.setting_error(str(exc.value), args) == (
        f"--config: {tmp_path / 'c.yml'}: YAML is not supported; use TOML or JSON"
    )


def test_an_unwritable_run_dir_ends_the_command_before_any_child(tmp_path, monkeypatch, capsys):
    """Also as root (who can write anywhere): the write check fails as for a user
    without permission, and no process may be started."""
    import pathlib

    run_dir = tmp_path / "run"
    real_write = pathlib.Path.write_bytes

    def refuse(self, data):
        if self.parent == run_dir:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, data)

    def no_child(*args, **kwargs):
        raise AssertionError(f"started a process: {args}")

    monkeypatch.setattr(pathlib.Path, "write_bytes", refuse)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    code = cli.main(["train", "--run-dir", str(run_dir), "--max-seconds", "5"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip() == f"dqn train: --run-dir: cannot write to '{run_dir}' (Permission denied)"
    assert not (run_dir / "config.json").exists() and not (run_dir / ".token").exists()
