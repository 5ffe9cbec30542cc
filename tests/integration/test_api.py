"""The Python API (``dqn.train``, ``dqn.load_policy``) as a user drives it: from a
script of their own (its ``__main__`` holds the env, as a notebook would), the README's
quick start, the example, callbacks that stop the run, an exception and a Ctrl-C that
must leave no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

# Ends every user script: no process of the run may outlive dqn.train.
NO_CHILDREN = """
import psutil as _psutil, time as _time
_deadline = _time.monotonic() + 30
while _psutil.Process().children(recursive=True) and _time.monotonic() < _deadline:
    _time.sleep(0.1)
_left = [p.pid for p in _psutil.Process().children(recursive=True)]
print("LEFT", _left, flush=True)
"""


def _run_script(
    tmp_path: Path, body: str, files: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Run ``body`` as a user's script in ``tmp_path`` (with ``files`` next to it), from
    ``cwd`` (default: ``tmp_path``)."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(body) + NO_CHILDREN)
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    if cwd is not None:
        cwd.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=cwd or tmp_path,  # a user's own directory: not the repository
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"script timed out:\n{out[-3000:]}\n{err[-3000:]}") from None
    assert "LEFT []" in out, f"processes left behind:\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


def _value(out: str, key: str) -> str:
    match = re.search(rf"^{key} (.*)$", out, re.M)
    assert match, f"no {key!r} line in:\n{out[-3000:]}"
    return match.group(1)


def test_readme_quick_start_runs_and_solves(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Python\n\n```python\n(.*?)```", readme, re.S)
    assert block, "README has no '## Python' section opening with a python block"
    code = block.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 5
    out, err = _finish(_run_script(tmp_path, code))
    lines = out.splitlines()
    solved, _, mean = lines[-3].split()  # print(result.solved, seconds_to_solve, eval_mean)
    assert solved == "True" and float(mean) >= 475, out[-3000:] + err[-2000:]
    assert lines[-2] in ("0", "1"), lines[-2]  # one observation -> one action
    assert (tmp_path / "runs" / "latest" / "summary.json").exists()  # relative to the cwd


def test_example_trains_a_users_own_env(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "train_own_env.py"), "--run-dir",
         str(tmp_path / "lights"), "--max-seconds", "240"],
        cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    played = float(re.search(r"played here: ([0-9.]+)", out).group(1))
    # random presses return 2.5 and an untrained net gets at most a few lamps right:
    # 9.5 needs every lamp learned, in the processes that built the script's class
    assert played >= 9.5, out[-3000:]
    summary = json.loads((tmp_path / "lights" / "summary.json").read_text())
    assert summary["solved"] and summary["eval_mean"] >= 9.5
    from tests.integration._train import processes_mentioning

    assert not processes_mentioning(str(tmp_path / "lights"))  # its servers are gone


def test_budget_counts_from_the_call_and_a_callback_stops_the_run(tmp_path):
    """A kernel that has been up a while: the run's clock starts at the call (the old
    launcher counted from process start), and on_progress returning True stops it."""
    proc = _run_script(
        tmp_path,
        """
        import json, time, psutil, gymnasium as gym
        import dqn

        class Lights(gym.Env):  # defined in __main__, as in a notebook cell
            def __init__(self):
                self.observation_space = gym.spaces.Box(0.0, 1.0, (4,), "float32")
                self.action_space = gym.spaces.Discrete(4)
            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                return self.observation_space.sample(), {}
            def step(self, action):
                return self.observation_space.sample(), 0.0, False, False, {}

        while time.time() - psutil.Process().create_time() < 8:  # an old kernel
            time.sleep(0.1)
        seen = []
        def on_progress(report):
            seen.append(report)
            return report.updates is not None and report.updates >= 100
        called = time.time()
        result = dqn.train(Lights, max_seconds=600, run_dir="run", on_progress=on_progress,
                           overrides={"env.solve_threshold": 1.0})
        print("SINCE_CALL", time.time() - called)
        print("RESULT", json.dumps({"wall": result.wall_seconds, "updates": result.updates,
              "reason": result.stop_reason, "kinds": sorted({type(r).__name__ for r in seen}),
              "last": seen[-1].updates}))
        """,
    )
    out, err = _finish(proc)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    result = json.loads(_value(out, "RESULT"))
    since_call = float(_value(out, "SINCE_CALL"))
    # counted from the call: no more than the call took (from process start it would
    # be at least 8 s more)
    assert result["wall"] <= since_call + 0.5, (result, since_call)
    assert result["kinds"] == ["ProgressReport"] and result["last"] >= 100
    assert result["updates"] >= 100 and result["reason"] != "max_seconds", result


def test_an_env_from_a_module_next_to_the_script_reaches_the_actors(tmp_path):
    """The module sits beside the script, which runs from another directory: only the
    script's process can import it, so the actors get the class by value. A callback's
    exception, once they stepped it, stops every process and reaches the caller."""
    proc = _run_script(
        tmp_path,
        """
        import dqn
        from my_lights import Lights  # importable here only: sys.path[0] is this folder

        def on_progress(report):
            if report.env_steps > 0:  # the actors built and stepped the env
                raise ValueError(f"user code failed at {report.env_steps} env steps")

        try:
            dqn.train(Lights, max_seconds=300, run_dir="run", on_progress=on_progress,
                      overrides={"env.solve_threshold": 1e9})
        except ValueError as exc:
            print("RAISED", exc)
        """,
        files={
            "my_lights.py": """
            import gymnasium as gym

            class Lights(gym.Env):
                observation_space = gym.spaces.Box(0.0, 1.0, (4,), "float32")
                action_space = gym.spaces.Discrete(4)

                def reset(self, *, seed=None, options=None):
                    super().reset(seed=seed)
                    return self.observation_space.sample(), {}

                def step(self, action):
                    return self.observation_space.sample(), 1.0, False, False, {}
            """
        },
        cwd=tmp_path / "elsewhere",
    )
    out, err = _finish(proc)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert _value(out, "RAISED").startswith("user code failed at"), out[-3000:]


def test_ctrl_c_in_the_caller_stops_every_process(tmp_path):
    proc = _run_script(
        tmp_path,
        """
        import dqn
        def on_progress(report):
            print("PROGRESS", report.env_steps, flush=True)
        try:
            dqn.train("CartPole-v1", max_seconds=300, run_dir="run", on_progress=on_progress,
                      overrides={"run.stop_when_solved": False})
        except KeyboardInterrupt:
            print("INTERRUPTED")
        """,
    )
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # wait until training runs
        if line.startswith("PROGRESS") or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGINT)  # the script only, as a notebook's interrupt does
    out, err = _finish(proc)
    assert "INTERRUPTED" in out, out[-3000:] + err[-3000:]
