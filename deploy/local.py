"""``dqn train``: the local single-node mode.

Topology, wired here and nowhere else:

1. the replay server, a process on a free loopback port;
2. the learner, a process hosting its weight server on a free loopback port;
3. a private local Ray (``address="local"``) running the actor fleet, whose actors
   talk gRPC to both servers, and the evaluator actor, which watches the learner's
   weights and reports greedy evaluations to it (plain processes with
   ``--actors.runner process``).

The env is built here first, once, to check the settings and resolve its spec (shape,
dtype, actions, threshold) into the config every child reads; only the actors and the
evaluator build envs after that.

The launcher waits for the learner to finish (solved, or a budget spent), then
stops the fleet, Ray and the replay server, on Ctrl-C or SIGTERM too, and leaves no
process behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from deploy.builder import Builder
from dqn import config as config_mod
from dqn import rpc
from dqn import security as security_mod
from dqn.config import Config
from dqn.files import atomic_write_json
from dqn.signals import restore as restore_signals
from dqn.signals import stop_on_signals

log = logging.getLogger("deploy.local")
MAX_REPLAY_RESTARTS = 5


class _PeakRSS:
    """Samples the RSS of this process and all its descendants (Ray's too)."""

    def __init__(self, interval: float = 1.0):
        self.peak = 0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._interval):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def _spawn(args: list[str]) -> subprocess.Popen:
    """A `dqn` subcommand as a child process sharing our stdout/stderr."""
    return subprocess.Popen([sys.executable, "-m", "deploy.cli", *args])


def _with_replay_checkpoint(config: Config, run_dir: Path, resume: bool) -> Config:
    """Unless set, checkpoint the replay server to RUN_DIR/checkpoints/replay.npz; a
    fresh (not --resume) run then starts from an empty buffer, not an old run's."""
    if config.replay.checkpoint_path:
        return config
    path = run_dir / "checkpoints" / "replay.npz"
    if not resume:
        path.unlink(missing_ok=True)
    replay = dataclasses.replace(config.replay, checkpoint_path=str(path))
    return dataclasses.replace(config, replay=replay)


def _start_replay(args: list[str], run_dir: Path) -> tuple[subprocess.Popen, dict]:
    """Start the replay server and wait until it serves; returns it and its ready info."""
    ready = run_dir / ".replay.ready"
    ready.unlink(missing_ok=True)
    proc = _spawn(["replay-server", *args, "--ready-file", str(ready)])
    try:
        return proc, rpc.read_ready_file(ready, 60, alive=lambda: proc.poll() is None)
    except BaseException:
        _terminate(proc, "replay server")
        raise


def _terminate(proc: subprocess.Popen | None, name: str, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) ignored SIGTERM; killing it", name, proc.pid)
        proc.kill()
        proc.wait()


def _with_run_token(config: Config, run_dir: Path) -> Config:
    """Unless a token is configured, make one for this run (a 0600 file in the run dir).

    The config records only the file's path, so no secret reaches config.json or logs.
    """
    if config.security.token_file or os.environ.get(security_mod.TOKEN_ENV):
        return config
    path = run_dir / ".token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
    return dataclasses.replace(
        config, security=dataclasses.replace(config.security, token_file=str(path))
    )


def _print_watch_hints(
    config: Config, run_dir: Path, replay_info: dict, learner_info: dict, start_time: float
) -> None:
    """Where to watch the run: the /metrics endpoints and TensorBoard's log dir."""
    urls = []
    for name, host, info in (
        ("replay", config.replay.host, replay_info),
        ("learner", config.learner.host, learner_info),
    ):
        if info.get("metrics_port"):
            h = f"[{host}]" if ":" in host else host
            urls.append(f"{name} http://{h}:{info['metrics_port']}/metrics")
    print(
        f"[{time.time() - start_time:6.1f}s] watch: tensorboard --logdir {run_dir / 'tb'}"
        + (f" | {', '.join(urls)}" if urls else ""),
        flush=True,
    )


def _with_cwd_on_path() -> str | None:
    """Children (servers, plain actors, Ray's workers) find the user's env module in the
    working directory as this process does, without PYTHONPATH being set. Returns the
    value it had, for :func:`_restore_path` (a notebook kernel outlives the run)."""
    before = os.environ.get("PYTHONPATH")
    cwd = os.getcwd()
    parts = [p for p in (before or "").split(os.pathsep) if p]
    if cwd not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([*parts, cwd])
    return before


def _restore_path(before: str | None) -> None:
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


class RecordTail:
    """Reads the records the learner appends to metrics.jsonl as they come (whole
    lines only), for the Python API's callbacks."""

    def __init__(self, path: Path):
        self.path = path
        # from the end: a resumed run appends to the old run's records, not for us
        self._offset = path.stat().st_size if path.exists() else 0
        self._partial = b""

    def deliver(self, on_record: Callable[[dict], bool]) -> bool:
        """Hand each new record to ``on_record`` in order, up to the first that returns
        True (then True: the caller asked to stop)."""
        return any(on_record(record) for record in self.read())

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


def train(
    config: Config,
    resume: bool = False,
    log_level: str = "INFO",
    *,
    start_time: float | None = None,
    on_record: Callable[[dict], bool] | None = None,
    raise_interrupt: bool = False,
) -> int:
    """Run the whole local topology until the learner ends; returns an exit code (0
    done, 1 failed, 130 stopped by SIGTERM or Ctrl-C).

    ``start_time`` (epoch seconds) is where the budget and the figures count from: the
    process's start for ``dqn train``, the call for ``dqn.train``. ``on_record`` gets
    every record the learner writes to metrics.jsonl while it runs and returns True to
    stop the run (the learner then writes its outputs as on SIGTERM); an exception it
    raises ends the run and is raised from here. With ``raise_interrupt`` a Ctrl-C is
    raised again once every process is gone."""
    start_time = psutil.Process().create_time() if start_time is None else start_time
    from dqn.envs import with_spec

    # The env is built here once, before any child starts: a module that does not
    # import, an unknown id, a non-Discrete action space... end the command (exit 2)
    # with one line, and the learner and the replay server get its spec, not the env.
    path_before = _with_cwd_on_path()
    try:
        config = with_spec(config)
        run_dir = config_mod.ensure_run_dir(config.run.dir)
    except BaseException:
        _restore_path(path_before)
        raise
    _remove_ready_files(run_dir)
    (run_dir / "summary.json").unlink(missing_ok=True)  # this run's, or none
    if not resume:
        for old in OUTPUTS:
            (run_dir / old).unlink(missing_ok=True)
    config = _with_run_token(config, run_dir)
    config = _with_replay_checkpoint(config, run_dir, resume)
    config_path = run_dir / "config.json"
    config_mod.save(config, config_path)
    builder = Builder(config)
    peak = _PeakRSS()
    stop = threading.Event()
    old_handlers = stop_on_signals(stop, (signal.SIGTERM,))
    tail = RecordTail(run_dir / "metrics.jsonl") if on_record else None
    replay = learner = fleet = None
    ray_started = interrupted = stopped_by_caller = ended = False
    code = 1
    try:
        common = ["--config", str(config_path), "--log-level", log_level]
        replay, replay_info = _start_replay(common, run_dir)
        replay_address = replay_info["address"]
        replay_restarts = 0

        learner_ready = run_dir / ".learner.ready"
        learner = _spawn(
            [
                "learner",
                *common,
                "--replay-address",
                replay_address,
                "--ready-file",
                str(learner_ready),
                "--start-time",
                str(start_time),
            ]
            + (["--resume"] if resume else [])
        )
        # Ray comes up while the learner starts. ray.init installs its own SIGTERM
        # handler over ours (it would kill the launcher at once and leave the replay
        # server running): ours again.
        ray_started = config.actors.runner != "process"  # set first: Ctrl-C in ray.init
        builder.start_ray("local")
        stop_on_signals(stop, (signal.SIGTERM,))
        learner_info = rpc.read_ready_file(learner_ready, 120, alive=lambda: learner.poll() is None)
        fleet = builder.fleet(replay_address, learner_info["address"])
        fleet.start(evaluator=True)
        kind = "actor processes" if config.actors.runner == "process" else "Ray actors"
        print(
            f"[{time.time() - start_time:6.1f}s] training {config.env.id}: replay "
            f"{replay_address}, weights {learner_info['address']} ({learner_info['device']}), "
            f"{config.actors.num_actors} {kind} x {config.actors.envs_per_actor} envs; "
            f"run dir {run_dir}",
            flush=True,
        )
        _print_watch_hints(config, run_dir, replay_info, learner_info, start_time)
        while not stop.is_set():
            if tail is not None and tail.deliver(on_record):
                stopped_by_caller = True
                break
            if learner.poll() is not None:
                break
            if replay.poll() is not None:
                # Supervise: bring it back on the same port from its checkpoint; the
                # learner and the actors reconnect to the same address by themselves.
                if replay_restarts >= MAX_REPLAY_RESTARTS:
                    log.error("replay server exited with %s again; stopping", replay.returncode)
                    break
                replay_restarts += 1
                log.warning(
                    "replay server exited with %s; restarting it (%d/%d)",
                    replay.returncode,
                    replay_restarts,
                    MAX_REPLAY_RESTARTS,
                )
                port = ["--replay.port", str(replay_info["port"])]
                if replay_info.get("metrics_port"):
                    port += ["--replay.metrics-port", str(replay_info["metrics_port"])]
                replay, replay_info = _start_replay([*common, *port], run_dir)
            fleet.supervise()  # process actors: restart the dead (Ray restarts its own)
            stop.wait(0.2)
        code = 0 if learner.poll() == 0 else 1
        ended = True
    except KeyboardInterrupt:
        print("interrupted; shutting down", flush=True)
        stop.set()
        interrupted = True
    except rpc.ProcessExited as exc:  # a child exited before it served (it said why)
        print(f"dqn train: stopping: a process exited at start-up ({exc})", file=sys.stderr)
        exits = [p.poll() for p in (replay, learner) if p is not None]
        code = 2 if 2 in exits else 1  # 2: it refused its configuration
    finally:
        held = _hold_interrupts()  # a second Ctrl-C must not cut the shutdown short
        try:
            code = _shut_down(learner, fleet, ray_started, replay, code)
        finally:
            restore_signals(held)
            restore_signals(old_handlers)
            _restore_path(path_before)
            _remove_ready_files(run_dir)
            _add_peak_rss(run_dir, peak.stop())
    if ended and tail is not None and not stopped_by_caller:
        tail.deliver(on_record)  # the learner's last records
    if interrupted and raise_interrupt:
        raise KeyboardInterrupt
    if stopped_by_caller:
        return code
    return code if not stop.is_set() else 130


OUTPUTS = ("summary.json", "policy.safetensors", "best_policy.safetensors", "metrics.jsonl")


def _remove_ready_files(run_dir: Path) -> None:
    for ready in run_dir.glob(".*.ready"):
        ready.unlink(missing_ok=True)


def _hold_interrupts() -> dict:
    """While shutting down, Ctrl-C is noted, not raised (main thread only)."""
    return stop_on_signals(
        lambda: print("still shutting down; every process is being stopped", flush=True),
        (signal.SIGINT,),
    )


def _shut_down(learner, fleet, ray_started: bool, replay, code: int) -> int:
    """Stop everything this launcher started, learner first (it writes its outputs on
    SIGTERM), each step whatever the one before did; returns the exit code the
    learner's end gives."""

    def stop_learner() -> None:
        nonlocal code
        if learner is not None and learner.poll() is None:
            _terminate(learner, "learner", 60)
            code = 0 if learner.returncode == 0 else 1

    def stop_ray() -> None:
        if ray_started:
            from actors.fleet import shutdown_ray

            shutdown_ray()

    steps = (
        ("learner", stop_learner),
        ("fleet", fleet.stop if fleet is not None else lambda: None),
        ("ray", stop_ray),
        ("replay server", lambda: _terminate(replay, "replay server")),
    )
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the next step must still run
            log.warning("stopping the %s: %s", name, exc)
    return code


def _add_peak_rss(run_dir: Path, peak_bytes: int) -> None:
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return
    summary = json.loads(summary_path.read_text())
    summary["peak_rss_mb"] = round(peak_bytes / rpc.MiB, 1)
    atomic_write_json(summary_path, summary)
    print(
        f"summary: solved={summary['solved']} seconds_to_solve="
        f"{summary['seconds_to_solve']} env_steps_to_solve={summary['env_steps_to_solve']}"
        f" eval={summary['eval_mean']:.1f} peak_rss={summary['peak_rss_mb']} MiB "
        f"-> {summary_path}",
        flush=True,
    )
