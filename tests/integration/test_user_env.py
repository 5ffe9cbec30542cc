"""A user's own env through the whole stack: a factory with kwargs plus a wrapper, from
a module in the working directory (no PYTHONPATH), trained to its optimum with the Ray
runner and with the process runner; the evaluator actor killed mid-run; and every bad
env setting refused by `dqn train` in one line before anything starts."""

from __future__ import annotations

import contextlib
import json
import signal
import time

import psutil
import pytest

from tests.integration._train import dqn, start_dqn, summary

pytestmark = pytest.mark.integration

# tests/user_envs.py: TargetEnv, length 5, rewards x2 by RewardScale -> optimum 10; an
# untrained policy gets ~3.4, any policy on the unwrapped env at most 5.
USER_ENV = [
    "--env",
    "tests.user_envs:make_target",
    "--env.kwargs",
    '{"length": 5, "n_actions": 3}',
    "--env.wrappers",
    "tests.user_envs:RewardScale",
    "--env.solve-threshold",
    "9.0",
]
SMALL = [
    "--num-actors",
    "2",
    "--actors.envs-per-actor",
    "4",
    "--actors.eps-decay-steps",
    "3000",
    "--replay.capacity",
    "20000",
    "--replay.min-size",
    "500",
    "--network.hidden",
    "64",
    "--learner.batch-size",
    "64",
    "--eval.every-versions",
    "5",
    "--max-env-steps",
    "1000000000",
]
NO_PYTHONPATH = {"PYTHONPATH": ""}


def _train(*args: str, timeout: float = 420):
    from tests.integration._train import ROOT

    assert not (ROOT / "user_envs.py").exists()  # found as tests.user_envs, from the cwd
    with start_dqn("train", *args, env=NO_PYTHONPATH) as proc:
        out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.timeout(900)
@pytest.mark.parametrize("runner", ["ray", "process"])
def test_a_factory_with_kwargs_and_a_wrapper_trains_to_its_optimum(tmp_path, runner):
    run_dir = tmp_path / "run"
    code, out, err = _train(
        "--run-dir", str(run_dir), "--actors.runner", runner, "--max-seconds", "300",
        *USER_ENV, *SMALL,
    )  # fmt: skip
    assert code == 0, out[-3000:] + err[-3000:]
    s = summary(run_dir)
    assert s["solved"] and s["stop_reason"] == "solved", s
    assert s["eval_mean"] >= 9.0 and s["threshold"] == 9.0
    config = json.loads((run_dir / "config.json").read_text())["env"]
    # the launcher resolved the spec the learner and the replay server used
    assert (config["obs_shape"], config["obs_dtype"], config["n_actions"]) == (
        [3],
        "float32",
        3,
    )
    # `dqn evaluate` rebuilds the same env (factory, kwargs, wrapper) from the run dir
    result = dqn("evaluate", str(run_dir), "--episodes", "20", "--json", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    # other seeds than the evaluator's: near the solving figure, and above 5, the most
    # any policy gets on an env the wrapper was not applied to
    assert evaluated["mean"] >= 7.0, evaluated


def _records(run_dir, kind):
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if r["kind"] == kind]


def _wait(predicate, timeout, what, proc):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"dqn train exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runner", ["ray", "process"])
def test_the_evaluator_killed_mid_run_comes_back_and_training_goes_on(tmp_path, runner):
    run_dir = tmp_path / "run"
    args = ["train", "--run-dir", str(run_dir), "--actors.runner", runner]
    args += [*USER_ENV, *SMALL, "--run.stop-when-solved", "false", "--max-seconds", "400"]
    args += ["--run.progress-every-seconds", "0.5", "--eval.schedule", "continuous"]
    with start_dqn(*args, env=NO_PYTHONPATH) as proc:
        try:
            _wait(
                lambda: _records(run_dir, "eval") and _records(run_dir, "progress"),
                240,
                "a first evaluation and progress record",
                proc,
            )
            first = _records(run_dir, "eval")[-1]["evaluator"]
            pid = int(first.rsplit(" ", 1)[1])
            victim = psutil.Process(pid)
            assert "dqn" not in " ".join(victim.cmdline()[-2:])  # not the launcher
            victim.kill()
            victim.wait(30)
            updates_at_kill = max(r["updates"] for r in _records(run_dir, "progress"))
            _wait(
                lambda: any(r["evaluator"] != first for r in _records(run_dir, "eval")),
                240,
                "an evaluation by the restarted evaluator",
                proc,
            )
            _wait(
                lambda: max(r["updates"] for r in _records(run_dir, "progress")) > updates_at_kill,
                120,
                "updates after the kill",
                proc,
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=180)
    assert proc.returncode in (0, 130), out[-3000:] + err[-3000:]
    s = summary(run_dir)
    assert s["evaluations"] >= 2 and s["updates"] > updates_at_kill


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--env", "no_such_module_xyz:Thing"], "no_such_module_xyz"),
        (["--env", "CartPol-v1"], "Did you mean: `CartPole`"),  # gymnasium's suggestion
        (["--env", "Pendulum-v1"], "Discrete"),  # continuous actions
        (["--env", "Blackjack-v1"], "Box"),  # a Tuple observation space
        (
            ["--env", "tests.user_envs:make_target", "--env.kwargs", '{"length": 0}'],
            "length",
        ),  # the factory raises on these kwargs
    ],
    ids=["module", "unknown-id", "actions", "observations", "factory-kwargs"],
)
def test_a_bad_env_is_refused_in_one_line_before_anything_starts(tmp_path, flags, says):
    run_dir = tmp_path / "run"
    with start_dqn("train", "--run-dir", str(run_dir), *flags, env=NO_PYTHONPATH) as proc:
        children: set[int] = set()
        me = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):  # it may exit meanwhile
                children |= {c.pid for c in me.children(recursive=True)}
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dqn train: --env") and says in lines[0], lines[0]  # the flag
    assert not children, "started a child before checking the env"
    assert not run_dir.exists() or not any(run_dir.iterdir())
