"""The learner: sample -> update -> priorities -> publish (:meth:`Learner.step`), with
the periodic work of :class:`~learner.schedule.Schedule` around it, until an
evaluator's report reaches the solve threshold or a budget is spent.

It builds no env and steps none: the env's spec comes from the config (``env.obs_shape``,
``env.n_actions``; ``dqn train`` fills them in), and greedy evaluations arrive from the
evaluator actor over ``EvaluationService.Report`` (:mod:`learner.evaluations`). It
leaves in the run directory: metrics.jsonl, tb/, checkpoints/learner.pt,
policy.safetensors and best_policy.safetensors (:mod:`learner.policy_export`),
learning_curve.png (refreshed while training) and summary.json, and serves Prometheus
``/metrics`` on ``--learner.metrics-port`` (:mod:`learner.reporter`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import torch

from dqn import config as config_mod
from dqn import rpc, seeding
from dqn.config import Config
from dqn.files import atomic_write_json
from dqn.networks import build_q_network
from dqn.security import Security
from dqn.telemetry import MetricsEndpoint
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner import checkpoint
from learner.cuda_graph import CapturedUpdate
from learner.evaluations import EvaluationInbox
from learner.metrics import Metrics
from learner.policy_export import PolicyExporter
from learner.priority_sender import PrioritySender
from learner.q_learning import DQNUpdate, pick_device
from learner.records import EvalRecord, Progress
from learner.reporter import Reporter
from learner.sampler import PrefetchingSampler
from learner.schedule import Schedule
from learner.weight_server import WeightServer, weight_series

log = logging.getLogger("learner")


def _round(value: float | None, digits: int) -> float | None:
    """A summary figure as a reader wants it (seconds to 0.1, means to 0.01)."""
    return None if value is None else round(float(value), digits)


class Learner:
    def __init__(
        self,
        config: Config,
        replay_address: str,
        *,
        resume: bool | str = False,
        start_time: float | None = None,
        num_actors: int | None = None,
        security: Security | None = None,
    ):
        config.env.require_spec()
        self.config, lc = config, config.learner
        self.start_time = start_time if start_time is not None else time.time()
        self.num_actors = num_actors if num_actors is not None else config.actors.num_actors
        self.device = pick_device(lc.device)
        torch.set_num_threads(lc.threads)
        torch.manual_seed(seeding.derive(config.run.seed, "learner"))
        self.obs_shape, self.n_actions = config.env.obs_shape, config.env.n_actions
        self.threshold = config.env.solve_threshold
        self.run_dir = Path(config.run.dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.json").exists():
            config_mod.save(config, self.run_dir / "config.json")
        nets = [build_q_network(self.obs_shape, self.n_actions, config.network) for _ in "ot"]
        self.dqn = DQNUpdate(nets[0].to(self.device), nets[1].to(self.device), lc)
        self.progress = Progress()
        self.metrics = Metrics(self.run_dir)
        self.ckpt_path = self.run_dir / "checkpoints" / "learner.pt"
        # resume: True = the checkpoint must exist; "auto" = use it if there is one
        # (a restarted cluster learner continues, a first start begins afresh).
        resumed = resume is True or (resume == "auto" and self.ckpt_path.exists())
        if resumed:
            self._restore()
        self.security = security
        self.weights = WeightServer(lc.host, lc.port, config.replay.max_message_mb, security)
        publisher = self.weights.publisher
        self.inbox = EvaluationInbox(
            lambda: publisher.version, self.threshold, self.start_time, publisher.pin
        )
        self.weights.server.add_handlers(self.inbox.handler())
        self.exporter = PolicyExporter(config, publisher, self.run_dir, resumed)
        self.replay_address = replay_address
        self._channel = rpc.channel(replay_address, config.replay.max_message_mb, security)
        self._replay = pb_grpc.ReplayServiceStub(self._channel)
        self.stop_event = threading.Event()
        self.sampler: PrefetchingSampler | None = None
        self.priority_sender: PrioritySender | None = None  # prioritized replay only
        self.update = self.dqn  # or its captured CUDA graph (see run)
        self.stats: dict = {}  # figures of the latest update
        self._info: pb.InfoResponse | None = None  # the latest replay Info
        self.schedule = Schedule(config, self.start_time, self.dqn.updates)
        # (monotonic time, updates, env steps) at the start of the current progress
        # interval and of the one before it (see _rates).
        self._mark = self._prev_mark = (time.monotonic(), self.dqn.updates, 0)
        self.reporter = Reporter(
            self.metrics, self._live_figures, lambda: weight_series(self.weights.publisher)
        )
        self.telemetry = MetricsEndpoint(lc.host, lc.metrics_port, self.reporter.series)

    # -- checkpoints ----------------------------------------------------------------
    def _restore(self) -> None:
        self.progress = checkpoint.restore(self.ckpt_path, self.dqn, self.metrics, self.device)
        log.info(
            "resumed from %s at %d updates, %d env steps",
            self.ckpt_path,
            self.progress.updates,
            self.progress.env_steps,
        )

    def save_checkpoint(self) -> None:
        self.progress.updates = self.dqn.updates
        checkpoint.write(self.ckpt_path, self.dqn, self.progress, self.metrics, self.config)
        self.exporter.save_best()

    # -- the loop -------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.time() - self.start_time

    def start(self) -> str:
        """Start the weight service and /metrics, publish the first weights; returns the
        weight service's address."""
        self.weights.start()
        self.telemetry.start()
        self._publish()
        return self.weights.address

    def _open_sampling(self) -> None:
        cfg, lc = self.config, self.config.learner
        self.sampler = PrefetchingSampler(
            self.replay_address,
            lc.batch_size,
            lc.batches_per_call,
            lc.prefetch_calls,
            self.device,
            cfg.replay.max_message_mb,
            learner_version=lambda: self.weights.publisher.version,
            security=self.security,
        )
        if cfg.replay.prioritized:
            self.priority_sender = PrioritySender(
                self.replay_address,
                flush_every=lc.batches_per_call,
                max_message_mb=cfg.replay.max_message_mb,
                security=self.security,
            )
        # The captured graph bakes in one batch layout; prioritized batches (extra
        # columns, beta changing per update) take the eager path.
        if lc.cuda_graph and self.device.type == "cuda" and not cfg.replay.prioritized:
            self.update = CapturedUpdate(self.dqn, lc.batch_size)

    def step(self) -> bool:
        """One update: sample -> update -> priorities -> publish every ``publish_every``.
        False when no batch was ready within a short wait (nothing done)."""
        batch = self.sampler.next(timeout=0.05)
        if batch is None:
            return False
        self.stats = self.update.step(batch)
        if self.priority_sender is not None:
            self.priority_sender.add(batch["index"], batch["key"], self.stats["td_abs"])
        if self.dqn.updates % self.config.learner.publish_every == 0:
            self._publish()
        return True

    def run(self) -> dict:
        """Train until solved (``run.stop_when_solved``), a budget is spent or stopped."""
        self._open_sampling()
        self._mark = self._prev_mark = (time.monotonic(), self.dqn.updates, self.progress.env_steps)
        reason = None
        while reason is None:
            if self.stop_event.is_set():
                reason = "stopped"
            elif self.step():
                self.schedule.throttle(self.dqn.updates)
            reason = reason or self._periodic() or self._take_evaluations()
            reason = reason or self.schedule.stop_reason(self.progress.env_steps, self.dqn.updates)
        return self.finish(reason)

    def _periodic(self) -> None:
        for task in self.schedule.due():
            if task == "info":
                self._poll_replay()
            elif task == "progress":
                self._report()
            elif task == "plot":
                self.metrics.refresh_plot(*self._curve_args(), self.progress.evals)
            elif task == "checkpoint":
                self.save_checkpoint()

    def _publish(self, evaluate: bool = False) -> int:
        return self.weights.publisher.publish(
            self.dqn.online.state_dict(), self.dqn.updates, self.progress.env_steps, evaluate
        )

    def _poll_replay(self) -> None:
        p = self.progress
        try:
            info = self._replay.Info(pb.InfoRequest(episodes_after=p.episodes_cursor), timeout=2.0)
        except grpc.RpcError as exc:
            log.warning("replay Info failed: %s", exc.code())
            return
        p.env_steps = max(p.env_steps, info.env_steps)
        if info.episodes_cursor < p.episodes_cursor:  # server restarted
            p.episodes_cursor = 0
        self.metrics.episodes_finished(
            p.env_steps,
            [ep.episode_return for ep in info.episodes],
            [ep.length for ep in info.episodes],
            [ep.env_steps for ep in info.episodes],
        )
        p.episodes_cursor = info.episodes_cursor
        if info.actors:
            p.epsilon = float(np.mean([a.epsilon for a in info.actors]))
        self._info = info

    # -- evaluations (reported by the evaluator actor) -----------------------------
    def _take_evaluations(self) -> str | None:
        """Record the reports received; "solved" when one solves and that stops the run."""
        solved = False
        for record in self.inbox.take():
            solved |= self._record_eval(record)
        return "solved" if solved and self.config.run.stop_when_solved else None

    def _record_eval(self, record: EvalRecord) -> bool:
        p = self.progress
        p.add_eval(record)
        self.metrics.evaluation(record)
        solved = self.inbox.solves(record.mean)
        print(
            f"[{record.seconds:6.1f}s] eval {record.mean:7.1f} ± {record.std:5.1f} over "
            f"{record.episodes} episodes at {record.env_steps:,} env steps, "
            f"{record.updates:,} updates (version {record.version}, played in "
            f"{record.wall_seconds:.2f} s)" + ("  -> solved" if solved else ""),
            flush=True,
        )
        if solved and p.solved_at is None:
            p.solved_at = record
            self.exporter.solving(record)
        self.exporter.offer(record)  # the best so far? (its weights are still pinned)
        self.weights.publisher.unpin(record.version)  # played, reported, exported
        return solved

    def _final_evaluation(self) -> None:
        """Publish the final weights asking for their evaluation; wait for it a while
        (not when stopped by a signal: a prompt exit matters more)."""
        wait = self.config.eval.final_wait_seconds
        last = self.progress.last_eval
        played = last is not None and last.updates == self.dqn.updates
        if wait <= 0 or played or self.stop_event.is_set():
            return
        version = self._publish(evaluate=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for record in self.inbox.take():
                self._record_eval(record)
                if record.version >= version:
                    return
            time.sleep(0.05)
        log.warning(
            "no evaluation of the final weights within %.0f s (is an evaluator running? "
            "--eval.final-wait-seconds 0 ends without waiting)",
            wait,
        )

    # -- reporting ------------------------------------------------------------------
    def _rates(self, final: bool) -> tuple[float, float]:
        """Env steps and updates per second since the previous report. A final report
        under one replay poll after the previous one spans the interval before it too."""
        now = time.monotonic()
        mark = self._prev_mark if final and now - self._mark[0] < 0.5 else self._mark
        dt = max(now - mark[0], 1e-9)
        rates = ((self.progress.env_steps - mark[2]) / dt, (self.dqn.updates - mark[1]) / dt)
        self._prev_mark, self._mark = self._mark, (now, self.dqn.updates, self.progress.env_steps)
        self.schedule.rate_mark(self.dqn.updates)
        return rates

    def _live_figures(self) -> dict:
        p, last = self.progress, self.progress.last_eval
        return {
            "env_steps": p.env_steps,
            "updates": self.dqn.updates,
            "epsilon": p.epsilon,
            "eval_return": last.mean if last is not None else None,
            "weights_version": self.weights.publisher.version,
            "episodes_total": self.metrics.episodes_total,
            "evaluations_total": p.evaluations,
            "solved": float(p.solved_at is not None),
            "evaluator_cpu_share": self.inbox.cpu_share,
        }

    def _report(self, final: bool = False) -> None:
        """One progress report of every figure (see learner.reporter.FIGURES)."""
        env_rate, update_rate = self._rates(final)
        info, stats = self._info, self.stats
        self.reporter.report(
            {
                **self._live_figures(),
                "env_steps_per_s": env_rate,
                "updates_per_s": update_rate,
                "recent_return": self.metrics.recent_return(),
                "loss": float(stats["loss"]) if stats else None,
                "q_mean": float(stats["q_mean"]) if stats else None,
                "replay_size": info.size if info else None,
                "policy_lag": info.policy_lag if info else None,
                "replay_bytes": info.obs_bytes if info else None,
                "samples_per_insert": info.samples_per_insert if info else None,
                "replay_counts": (info.inserted, info.sampled) if info else None,
                "waiting": self.sampler.waiting_reason if self.sampler else "",
                "budget_spent": self.schedule.budget_spent(
                    self.progress.env_steps, self.dqn.updates
                ),
            },
            self.elapsed(),
            final,
        )

    # -- the end ----------------------------------------------------------------------
    def finish(self, reason: str) -> dict:
        """Final progress report and evaluation, policy, checkpoint, summary and curve."""
        p = self.progress
        self._poll_replay()
        self._report(final=True)  # every run ends with its final figures
        if reason != "solved":  # its last weights are the policy: evaluated and exported
            self._final_evaluation()
            self.exporter.final(self.dqn.online, self.dqn.updates, p.env_steps, p.last_eval)
        self.inbox.done = True
        self.save_checkpoint()
        summary = self._summary(reason)
        atomic_write_json(self.run_dir / "summary.json", summary)
        self.metrics.plot(*self._curve_args(), p.evals)
        return summary

    def _summary(self, reason: str) -> dict:
        p = self.progress
        solved, last = p.solved_at, p.last_eval
        shown = solved or last
        summary = {
            "env_id": self.config.env.id,
            # stop_reason says why the loop ended; whether it solved is `solved`
            "solved": solved is not None,
            "stop_reason": reason,
            "threshold": self.threshold,
            "seconds_to_solve": _round(solved.seconds, 1) if solved else None,
            "env_steps_to_solve": solved.env_steps if solved else None,
            "updates_to_solve": solved.updates if solved else None,
            "eval_mean": _round(shown.mean, 2) if shown else float("nan"),
            "eval_std": _round(shown.std, 2) if shown else float("nan"),
            "evaluations": p.evaluations,
            "evaluator_cpu_share": _round(self.inbox.cpu_share, 3),
            "env_steps": p.env_steps,
            "updates": self.dqn.updates,
            "episodes": self.metrics.episodes_total,
            "wall_seconds": _round(self.elapsed(), 1),
            "actors": self.num_actors,
            "envs_per_actor": self.config.actors.envs_per_actor,
            "device": str(self.device),
            "replay_bytes": self._info.obs_bytes if self._info is not None else 0,
            "samples_per_insert": _round(self._info.samples_per_insert, 2) if self._info else None,
            "seed": self.config.run.seed,
        }
        if self.priority_sender is not None:
            self.priority_sender.close()  # sends the rest, so the counts are final
            s = self.priority_sender
            summary["priority_updates"] = {"sent": s.sent, "stale": s.stale, "dropped": s.dropped}
        return summary

    def _curve_args(self) -> tuple:
        return self.run_dir / "learning_curve.png", f"DQN on {self.config.env.id}", self.threshold

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
        if self.priority_sender is not None:
            self.priority_sender.close()
        self.weights.stop()
        self.telemetry.stop()
        self._channel.close()
        self.metrics.close()
