"""The mistakes a new user makes with `dqn train` end it with exit code 2 and one line
on stderr naming the option (an unknown flag: the subcommand's usage, then one error
line), no traceback, and nothing started: no child process, nothing in the run dir.

Each command runs as a real ``python -m deploy.cli train ...`` from the repository
root. Every Python process it starts records its pid (a ``sitecustomize`` on the
PYTHONPATH the children inherit), so "no child started" is checked, not assumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOOK = """\
import os
_log = os.environ.get("DQN_TEST_PROCESS_LOG")
if _log:
    open(os.path.join(_log, str(os.getpid())), "w").close()
"""


def _train(tmp_path: Path, *flags: str, env: dict | None = None, run_dir: Path | None = None):
    """Run `dqn train --run-dir RUN_DIR FLAGS`; returns (process, stderr lines, run dir,
    pids of the Python processes it ran)."""
    hook, log = tmp_path / "hook", tmp_path / "pids"
    hook.mkdir(exist_ok=True)
    log.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    run_dir = run_dir or tmp_path / "run"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DQN_")}
    environ.update(PYTHONPATH=str(hook), DQN_TEST_PROCESS_LOG=str(log), **(env or {}))
    with subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "train", "--run-dir", str(run_dir), *flags],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"dqn train {' '.join(flags)} ran on") from None
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    result.pid = proc.pid
    lines = [line for line in err.splitlines() if line.strip()]
    return result, lines, run_dir, sorted(int(p) for p in os.listdir(log))


def _nothing_started(proc, run_dir: Path, pids: list[int]) -> None:
    assert pids == [proc.pid], f"processes ran: {pids}, dqn train was {proc.pid}"
    assert "Traceback" not in proc.stderr and proc.stdout == "", proc.stdout + proc.stderr
    for name in ("config.json", ".token", "metrics.jsonl", ".replay.ready"):
        assert not (run_dir / name).exists(), f"{name} written"


def test_the_process_log_sees_children(tmp_path):
    """The check below can fail: a command that starts a child is seen doing so."""
    hook, log = tmp_path / "hook", tmp_path / "pids"
    hook.mkdir()
    log.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'], check=True)"
    env = {**os.environ, "PYTHONPATH": str(hook), "DQN_TEST_PROCESS_LOG": str(log)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert len(os.listdir(log)) == 2


@pytest.mark.parametrize(
    "flags, option, says",
    [
        (["--env", "CartPol-v1"], "--env", "Did you mean: `CartPole`?"),  # gymnasium's
        (["--env", "Pendulum-v1"], "--env", "is not Discrete"),
        (["--learner.lr", "-1"], "--learner.lr", "must be > 0, got -1.0"),
        (["--learner.lr", "abc"], "--learner.lr", "expected float, got 'abc'"),
        # a bare boolean is a flag now: the line is about the value after it
        (["--network.dueling", "--learner.lr", "-1"], "--learner.lr", "must be > 0"),
        (["--network.dueling", "maybe"], "--network.dueling", "expected bool, got 'maybe'"),
        (["--max-seconds", "0"], "--max-seconds", "must be > 0, got 0.0"),
    ],
    ids=["unknown-id", "continuous", "negative-lr", "text-lr", "bare-bool", "bad-bool", "budget"],
)
def test_a_bad_option_is_one_line_naming_it(tmp_path, flags, option, says):
    proc, lines, run_dir, pids = _train(tmp_path, *flags)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"dqn train: {option}: ") and says in lines[0], lines[0]
    _nothing_started(proc, run_dir, pids)


def test_a_bad_environment_variable_is_named(tmp_path):
    proc, lines, run_dir, pids = _train(tmp_path, env={"DQN_LEARNER__LR": "-1"})
    assert proc.returncode == 2, proc.stderr
    assert lines == ["dqn train: DQN_LEARNER__LR: must be > 0, got -1.0"]
    _nothing_started(proc, run_dir, pids)


def test_a_run_dir_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    run_dir = tmp_path / "afile" / "run"
    proc, lines, _, pids = _train(tmp_path, run_dir=run_dir)
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"dqn train: --run-dir: '{run_dir}' is under or is a file, not a directory"]
    _nothing_started(proc, run_dir, pids)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 directory")
def test_an_unwritable_run_dir(tmp_path):
    """(tests/unit/test_cli.py checks the same message as root, with the write refused.)"""
    run_dir = tmp_path / "locked"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    try:
        proc, lines, _, pids = _train(tmp_path, run_dir=run_dir)
    finally:
        run_dir.chmod(0o700)
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"dqn train: --run-dir: cannot write to '{run_dir}' (Permission denied)"]
    _nothing_started(proc, run_dir, pids)
    assert list(run_dir.iterdir()) == []


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_a_yaml_config_is_refused_by_name(tmp_path, suffix):
    path = tmp_path / f"settings{suffix}"
    path.write_text("learner:\n  lr: 0.001\n")
    proc, lines, run_dir, pids = _train(tmp_path, "--config", str(path))
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"dqn train: --config: {path}: YAML is not supported; use TOML or JSON"]
    _nothing_started(proc, run_dir, pids)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
        # an abbreviation of --max-seconds is refused, with the flag it abbreviates
        (["--max-second", "40"], "unrecognized arguments: --max-second 40 (did you mean "),
        (["--learner.lr"], "argument --learner.lr: expected one argument"),
    ],
    ids=["unknown", "abbreviation", "no-value"],
)
def test_an_unknown_flag_shows_the_subcommands_usage(tmp_path, flags, says):
    proc, lines, run_dir, pids = _train(tmp_path, *flags)
    assert proc.returncode == 2, proc.stderr
    assert lines[0].startswith("usage: dqn train "), proc.stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), proc.stderr  # usage, wrapped
    assert lines[-1].startswith("dqn train: error: ") and says in lines[-1], lines[-1]
    if "did you mean" in says:
        assert lines[-1].endswith("(did you mean --max-seconds?)"), lines[-1]
    _nothing_started(proc, run_dir, pids)


def test_a_device_the_machine_lacks_is_a_line_not_a_traceback(tmp_path):
    """Only the learner can tell (it imports torch): it refuses in one line, the
    launcher says it stopped in one more, exit 2, and nothing is left running."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result, lines, run_dir, pids = _train(tmp_path, "--device", "cuda", "--max-seconds", "60")
    assert result.returncode == 2, lines
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert any("learner.device" in line and "CUDA" in line for line in lines), lines
    assert not list(run_dir.glob(".*.ready"))
    for pid in pids:  # every process the command started has ended
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
