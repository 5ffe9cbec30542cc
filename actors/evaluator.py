"""The evaluator actor: greedy evaluations of the learner's newest weights, reported to
the learner, so that no env is ever stepped in the learner's process.

It watches the weight service like any actor, and when its schedule says so
(:class:`EvalSchedule`: every K versions, every N seconds, or continuously; at most
one evaluation in flight, since it plays them one after another) it plays
``eval.episodes`` greedy episodes at once, one per env of a vector env, with the
version it holds, and reports them with ``EvaluationService.Report``. A version the
learner publishes with ``evaluate`` set (the final weights of a run) is played
whatever the schedule. It runs as a Ray actor, a plain process
(``--actors.runner process``) or its own service (``dqn evaluator``), and is
restarted like any actor if it dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import grpc
import numpy as np

from actors.policy import build_policy
from dqn import rpc, seeding
from dqn.config import Config, EvalConfig
from dqn.envs import make_vector_env
from dqn.retry import Backoff, retry_delay
from dqn.security import Security
from dqn.signals import stop_on_signals
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc

log = logging.getLogger("actors.evaluator")
REPORT_TIMEOUT_S = 10.0
REPORT_TRIES = 5


class EvalSchedule:
    """Whether the version at hand is due for an evaluation."""

    def __init__(self, cfg: EvalConfig):
        self.cfg = cfg
        self.last_version = 0  # 0 = none evaluated yet
        self.last_start = -float("inf")

    def due(self, version: int, now: float, requested: bool = False) -> bool:
        if version <= self.last_version:
            return False
        if requested or self.last_version == 0:
            return True
        if self.cfg.schedule == "versions":
            return version - self.last_version >= self.cfg.every_versions
        if self.cfg.schedule == "seconds":
            return now - self.last_start >= self.cfg.every_seconds
        return True  # continuous

    def started(self, version: int, now: float) -> None:
        self.last_version, self.last_start = version, now


def play_greedy(env, q_values, seed: int, on_step=None) -> np.ndarray:
    """One greedy episode in each env of the vector env ``env`` (NEXT_STEP autoreset),
    reset with ``seed``; returns their returns, ``[num_envs]`` float64. ``q_values``
    maps observations ``[B, *obs_shape]`` to Q-values ``[B, A]`` (a policy of
    :mod:`actors.policy`, ``dqn.policy_file.Policy.q_values``). ``on_step(returns,
    done)``, if given, runs after the reset and after every step; False stops early.

    The one greedy-play loop: the evaluator actor, ``dqn evaluate`` and its video use it.
    """
    obs, _ = env.reset(seed=seed)
    returns = np.zeros(env.num_envs, dtype=np.float64)
    done = np.zeros(env.num_envs, dtype=bool)
    while (on_step is None or on_step(returns, done) is not False) and not done.all():
        actions = np.asarray(q_values(obs)).argmax(axis=1)
        obs, reward, terminated, truncated, _ = env.step(actions)
        returns += np.where(done, 0.0, reward)
        done |= terminated | truncated
    return returns


class GreedyEvaluator:
    """Plays ``episodes`` greedy episodes at once with a policy from :mod:`actors.policy`."""

    def __init__(self, config: Config):
        self.episodes = config.eval.episodes
        self.run_seed = config.run.seed
        self.seed = seeding.derive(config.run.seed, "evaluator")
        self.env = make_vector_env(config.env, self.episodes, seed=self.seed)
        self.calls = 0

    def play(self, policy) -> np.ndarray:
        """Returns of ``episodes`` greedy episodes, ``[episodes]`` float64."""
        self.calls += 1
        # each evaluation resets with episodes of its own: index = the evaluation's number
        return play_greedy(self.env, policy, seeding.derive(self.run_seed, "evaluator", self.calls))

    def close(self) -> None:
        self.env.close()


class EvaluationReporter:
    """``EvaluationService.Report`` with retries (a restarting learner, a busy server)."""

    def __init__(self, address: str, max_message_mb: int, security: Security | None):
        self._channel = rpc.channel(address, max_message_mb, security)
        self._stub = pb_grpc.EvaluationServiceStub(self._channel)

    def begin(self, version: int, name: str) -> None:
        """Tell the learner which version is being played, so it keeps those weights
        (one try: an evaluation goes on without it, its export may then be newer)."""
        try:
            self._stub.Begin(
                pb.EvaluationStart(version=version, evaluator=name), timeout=REPORT_TIMEOUT_S
            )
        except grpc.RpcError as exc:
            log.debug("EvaluationService.Begin for version %d failed: %s", version, exc.code())

    def send(self, report: pb.Evaluation, stop: threading.Event) -> pb.EvaluationAck | None:
        backoff = Backoff(cap=2.0)
        for attempt in range(REPORT_TRIES):
            try:
                return self._stub.Report(report, timeout=REPORT_TIMEOUT_S)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.error("evaluation of version %d refused: %s", report.version, exc.details())
                    return None
                log.warning(
                    "reporting evaluation of version %d failed (%s), try %d/%d",
                    report.version,
                    exc.code(),
                    attempt + 1,
                    REPORT_TRIES,
                )
                if stop.wait(retry_delay(exc, backoff)):
                    return None
        return None

    def close(self) -> None:
        self._channel.close()


def evaluate_version(
    evaluator: GreedyEvaluator, policy, weights, name: str, started: tuple[float, float]
) -> pb.Evaluation:
    """Play the version ``weights`` last loaded into ``policy``; the report for it
    (``started``: ``time.monotonic()`` and ``time.process_time()`` when evaluating began)."""
    t0 = time.monotonic()
    returns = evaluator.play(policy)
    return pb.Evaluation(
        cpu_seconds=time.process_time() - started[1],
        uptime_seconds=time.monotonic() - started[0],
        version=weights.version,
        updates=weights.updates,
        env_steps=weights.env_steps,
        returns=returns.tolist(),
        mean=float(returns.mean()),
        std=float(returns.std()),
        wall_seconds=time.monotonic() - t0,
        evaluator=name,
    )


def run_evaluator(
    config: Config,
    learner_address: str,
    stop: threading.Event | None = None,
    security: Security | None = None,
) -> int:
    """Evaluate until ``stop`` is set (or SIGTERM/SIGINT in a plain process); returns
    the number of evaluations reported."""

    from actors.weight_client import GrpcWeightClient

    stop = stop or threading.Event()
    if config.eval.nice:
        # On Linux this lowers only the calling thread (in a Ray actor: the evaluation
        # thread, not Ray's own); on other systems the process.
        with contextlib.suppress(OSError):
            os.nice(config.eval.nice)
    stop_on_signals(stop)
    mb = config.replay.max_message_mb
    weights = GrpcWeightClient(learner_address, max_message_mb=mb, security=security)
    reporter = EvaluationReporter(learner_address, mb, security)
    evaluator = GreedyEvaluator(config)
    env = evaluator.env
    policy = build_policy(
        env.single_observation_space.shape,
        int(env.single_action_space.n),
        config.network,
        np.random.default_rng(evaluator.seed),
    )
    schedule, name = EvalSchedule(config.eval), f"evaluator pid {os.getpid()}"
    reported, playing, t0, cpu0 = 0, 0.0, time.monotonic(), time.process_time()
    log.info("%s: %d greedy episodes, schedule %s", name, evaluator.episodes, config.eval.schedule)
    try:
        while not stop.is_set():
            weights.update(policy)  # the newest version, if newer than the one held
            now = time.monotonic()
            if not schedule.due(weights.version, now, weights.evaluate):
                stop.wait(0.02)
                continue
            schedule.started(weights.version, now)
            reporter.begin(weights.version, name)
            report = evaluate_version(evaluator, policy, weights, name, (t0, cpu0))
            playing += report.wall_seconds
            reported += reporter.send(report, stop) is not None
        wall = max(time.monotonic() - t0, 1e-9)
        log.info(
            "%s: %d evaluations reported in %.1f s; playing %.0f%% of the time, CPU %.0f%% "
            "of one core",
            name,
            reported,
            wall,
            100 * playing / wall,
            100 * (time.process_time() - cpu0) / wall,
        )
    finally:
        weights.close()
        reporter.close()
        evaluator.close()
    return reported
