"""Learner process: ``dqn learner`` (and the learner side of ``dqn train``).

prefetch -> update -> publish every K updates -> evaluate -> checkpoint, until the
greedy evaluation reaches the threshold or a budget (seconds, env steps, updates)
is spent. Leaves in the run directory: metrics.jsonl, tb/, checkpoints/learner.pt,
policy.pt (TorchScript), learning_curve.png (refreshed while training) and summary.json;
serves Prometheus ``/metrics`` on ``--learner.metrics-port`` (see :meth:`_series`).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import torch

from dqn import config as config_mod
from dqn import rpc
from dqn.config import Config
from dqn.envs import env_spec
from dqn.networks import build_q_network
from dqn.security import Security
from dqn.telemetry import MetricsEndpoint, Series
from dqn.v1 import replay_pb2 as pb
from dqn.v1 import replay_pb2_grpc as pb_grpc
from learner import checkpoint
from learner.cuda_graph import CapturedUpdate
from learner.dqn import DQNUpdate
from learner.evaluation import Evaluator
from learner.metrics import Metrics, thin_history
from learner.priority_sender import PrioritySender
from learner.sampler import PrefetchingSampler
from learner.weight_service import WeightServer

log = logging.getLogger("learner")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise config_mod.ConfigError("learner.device: 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def export_policy(net: torch.nn.Module, obs_shape, path: Path) -> None:
    """TorchScript policy: float32 ``[B, *obs_shape]`` -> Q-values ``[B, n_actions]``
    (image observations: pixel values 0..255, uint8 or float32)."""
    import copy

    cpu_net = copy.deepcopy(net).to("cpu").eval()
    example = torch.zeros((2, *obs_shape), dtype=torch.float32)
    with torch.no_grad():
        scripted = torch.jit.trace(cpu_net, example)
    tmp = path.with_suffix(".tmp")
    scripted.save(str(tmp))
    tmp.replace(path)


@dataclass
class Progress:
    """Counters and history the learner keeps (and checkpoints)."""

    updates: int = 0
    env_steps: int = 0
    episodes_cursor: int = 0
    # (env_steps, updates, seconds, mean, std), thinned evenly to metrics.EVALS_KEPT
    evals: list = field(default_factory=list)
    evaluations: int = 0  # evaluations run (evals keeps a thinned history of them)
    solved_at: dict | None = None
    epsilon: float = 1.0

    def __post_init__(self) -> None:
        # a checkpoint from before the history was thinned has no count
        self.evaluations = max(self.evaluations, len(self.evals))


class LearnerProcess:
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
        self.config = config
        self.start_time = start_time if start_time is not None else time.time()
        self.num_actors = num_actors if num_actors is not None else config.actors.num_actors
        lc = config.learner
        self.device = pick_device(lc.device)
        torch.set_num_threads(lc.threads)
        torch.manual_seed(config.run.seed)
        self.obs_shape, self.n_actions, threshold = env_spec(config.env.id)
        self.threshold = (
            config.env.solve_threshold if config.env.solve_threshold is not None else threshold
        )
        self.run_dir = Path(config.run.dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.run_dir / "config.json").exists():
            config_mod.save(config, self.run_dir / "config.json")
        online = build_q_network(self.obs_shape, self.n_actions, config.network).to(self.device)
        target = build_q_network(self.obs_shape, self.n_actions, config.network).to(self.device)
        self.dqn = DQNUpdate(online, target, lc)
        self.progress = Progress()
        self.metrics = Metrics(self.run_dir)
        self.ckpt_path = self.run_dir / "checkpoints" / "learner.pt"
        # resume: True = the checkpoint must exist; "auto" = use it if there is one
        # (a restarted cluster learner continues, a first start begins afresh).
        if resume is True or (resume == "auto" and self.ckpt_path.exists()):
            self._restore()
        self.security = security
        self.weights = WeightServer(lc.host, lc.port, config.replay.max_message_mb, security)
        self.replay_address = replay_address
        self._channel = rpc.channel(replay_address, config.replay.max_message_mb, security)
        self._replay = pb_grpc.ReplayServiceStub(self._channel)
        self.evaluator = Evaluator(
            config.env.id, config.eval.episodes, seed=config.run.seed + 1_000_003
        )
        self.stop_event = threading.Event()
        self.sampler: PrefetchingSampler | None = None
        self.priority_sender: PrioritySender | None = None  # prioritized replay only
        self._info: pb.InfoResponse | None = None  # the latest replay Info
        # Figures of the latest progress report, read by /metrics scrapes.
        self._latest: dict[str, float] = {}
        # (monotonic time, updates, env steps) at the start of the current progress
        # interval and of the one before it (see :meth:`_report`).
        self._mark = self._prev_mark = (time.monotonic(), 0, 0)
        self.telemetry = MetricsEndpoint(lc.host, lc.metrics_port, self._series)

    # -- checkpoints ----------------------------------------------------------------
    def _restore(self) -> None:
        if not self.ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {self.ckpt_path}")
        state = checkpoint.load(self.ckpt_path, self.device)
        self.dqn.online.load_state_dict(state["online"])
        self.dqn.target.load_state_dict(state["target"])
        self.dqn.optimizer.load_state_dict(state["optimizer"])
        self.dqn.updates = state["progress"]["updates"]
        self.progress = Progress(**state["progress"])
        self.metrics.episodes.extend(tuple(e) for e in state.get("episodes", []))
        self.metrics.episodes_total = state.get("episodes_total", 0)
        self.metrics.evals = [(e[0], e[3], e[4]) for e in self.progress.evals]
        self.metrics.evaluations_total = self.progress.evaluations
        log.info(
            "resumed from %s at %d updates, %d env steps",
            self.ckpt_path,
            self.progress.updates,
            self.progress.env_steps,
        )

    def save_checkpoint(self) -> None:
        p = self.progress
        p.updates = self.dqn.updates
        checkpoint.save(
            self.ckpt_path,
            {
                "online": self.dqn.online.state_dict(),
                "target": self.dqn.target.state_dict(),
                "optimizer": self.dqn.optimizer.state_dict(),
                "progress": p.__dict__,
                "episodes": list(self.metrics.episodes)[-10_000:],
                "episodes_total": self.metrics.episodes_total,
                "config": self.config.to_dict(),
            },
        )

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

    def run(self) -> dict:
        cfg, lc, rc = self.config, self.config.learner, self.config.run
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
        last_progress = last_ckpt = last_info = last_plot = time.monotonic()
        self._mark = self._prev_mark = (last_progress, self.dqn.updates, self.progress.env_steps)
        stats: dict = {}
        reason = "stopped"
        update = self.dqn
        # The captured graph bakes in one batch layout; prioritized batches (extra
        # columns, beta changing per update) take the eager path.
        if lc.cuda_graph and self.device.type == "cuda" and not self.config.replay.prioritized:
            update = CapturedUpdate(self.dqn, lc.batch_size)
        while not self.stop_event.is_set():
            batch = self.sampler.next(timeout=0.05)
            if batch is not None:
                stats = update.step(batch)
                if self.priority_sender is not None:
                    self.priority_sender.add(batch["index"], batch["key"], stats["td_abs"])
                u = self.dqn.updates
                if u % lc.publish_every == 0:
                    self._publish()
                if u % cfg.eval.every_updates == 0 and self._evaluate() and rc.stop_when_solved:
                    # stop_reason says why the loop ended; whether it solved along
                    # the way is the summary's `solved`.
                    reason = "solved"
                    break
                if lc.max_updates_per_sec > 0:
                    rate_t0, rate_updates, _ = self._mark
                    ahead = (u - rate_updates) / lc.max_updates_per_sec - (
                        time.monotonic() - rate_t0
                    )
                    if ahead > 0:
                        time.sleep(ahead)
            now = time.monotonic()
            if now - last_info >= 0.5:
                last_info = now
                self._poll_replay()
            if now - last_progress >= rc.progress_every_seconds:
                last_progress = now
                self._report(stats)
            if now - last_plot >= rc.plot_every_seconds:
                last_plot = now
                self.metrics.refresh_plot(*self._curve_args())
            if now - last_ckpt >= rc.checkpoint_every_seconds:
                last_ckpt = now
                self.save_checkpoint()
            if self.elapsed() >= rc.max_seconds:
                reason = "max_seconds"
                break
            if self.progress.env_steps >= rc.max_env_steps:
                reason = "max_env_steps"
                break
            if self.dqn.updates >= rc.max_updates:
                reason = "max_updates"
                break
        return self.finish(reason, stats)

    def _publish(self) -> None:
        self.weights.publisher.publish(
            self.dqn.online.state_dict(), self.dqn.updates, self.progress.env_steps
        )

    def _poll_replay(self) -> None:
        try:
            info = self._replay.Info(
                pb.InfoRequest(episodes_after=self.progress.episodes_cursor), timeout=2.0
            )
        except grpc.RpcError as exc:
            log.warning("replay Info failed: %s", exc.code())
            return
        self.progress.env_steps = max(self.progress.env_steps, info.env_steps)
        if info.episodes_cursor < self.progress.episodes_cursor:  # server restarted
            self.progress.episodes_cursor = 0
        self.metrics.episodes_finished(
            self.progress.env_steps,
            [ep.episode_return for ep in info.episodes],
            [ep.length for ep in info.episodes],
        )
        self.progress.episodes_cursor = info.episodes_cursor
        if info.actors:
            self.progress.epsilon = float(np.mean([a.epsilon for a in info.actors]))
        self._info = info

    def _evaluate(self) -> bool:
        """Evaluate greedily; True when the mean reaches the solve threshold."""
        returns = self.evaluator.run(self.dqn.online, self.device)
        p = self.progress
        mean, std = float(returns.mean()), float(returns.std())
        p.evals.append((p.env_steps, self.dqn.updates, self.elapsed(), mean, std))
        p.evaluations += 1
        thin_history(p.evals, p.evaluations)
        self.metrics.evaluation(p.env_steps, returns, self.dqn.updates)
        solved = self.threshold is not None and mean >= self.threshold
        print(
            f"[{self.elapsed():6.1f}s] eval {mean:7.1f} ± {std:5.1f} over {len(returns)} "
            f"episodes at {p.env_steps:,} env steps, {self.dqn.updates:,} updates"
            + ("  -> solved" if solved else ""),
            flush=True,
        )
        if solved and p.solved_at is None:
            p.solved_at = {
                "seconds": self.elapsed(),
                "env_steps": p.env_steps,
                "updates": self.dqn.updates,
                "mean": mean,
                "std": std,
            }
            export_policy(self.dqn.online, self.obs_shape, self.run_dir / "policy.pt")
        return solved

    def _report(self, stats: dict, final: bool = False) -> None:
        """A progress line and ``progress`` record; rates over the interval since the
        previous report. The final report of a run (``final``) covers the rest of the
        run, however short; if that is under one replay poll (0.5 s: env steps are only
        seen that often), its rates span the interval before it too."""
        now = time.monotonic()
        mark = self._prev_mark if final and now - self._mark[0] < 0.5 else self._mark
        dt = max(now - mark[0], 1e-9)
        rates = (
            (self.progress.env_steps - mark[2]) / dt,
            (self.dqn.updates - mark[1]) / dt,
        )
        self._prev_mark = self._mark
        self._mark = (now, self.dqn.updates, self.progress.env_steps)
        p = self.progress
        info = self._info
        recent = self.metrics.recent_return()
        last_eval = f"{p.evals[-1][3]:.1f}" if p.evals else "-"
        waiting = self.sampler.waiting_reason if self.sampler else ""
        loss = float(stats["loss"]) if stats else float("nan")
        line = (
            f"[{self.elapsed():6.1f}s] steps {p.env_steps:>9,} ({rates[0]:6.0f}/s) | "
            f"updates {self.dqn.updates:>8,} ({rates[1]:5.0f}/s) | eps {p.epsilon:.3f} | "
            f"return(20) {recent if recent is None else round(recent, 1)} | eval {last_eval}"
            f" | loss {loss:.4f}"
        )
        if info is not None:
            line += f" | replay {info.size:,} lag {info.policy_lag:.1f}"
        if waiting:
            line += f" | waiting: {waiting}"
        q_mean = float(stats["q_mean"]) if stats else float("nan")
        # /metrics shows these figures by the time anyone can read the line.
        self._latest = {
            "loss": loss,
            "q_mean": q_mean,
            "env_steps_per_s": rates[0],
            "updates_per_s": rates[1],
            "recent_return": recent if recent is not None else float("nan"),
        }
        print(line, flush=True)
        self.metrics.log(
            "progress",
            p.env_steps,
            updates=self.dqn.updates,
            env_steps_per_s=rates[0],
            updates_per_s=rates[1],
            epsilon=p.epsilon,
            **({"loss": loss, "q_mean": q_mean} if stats else {}),
            policy_lag=info.policy_lag if info else 0.0,
            replay_size=info.size if info else 0,
            replay_bytes=info.obs_bytes if info else 0,
            samples_per_insert=info.samples_per_insert if info else 0.0,
            recent_return=recent if recent is not None else 0.0,
            **({"final": True} if final else {}),
        )
        tb = {
            "speed/env_steps_per_s": rates[0],
            "speed/updates_per_s": rates[1],
            "actors/epsilon": p.epsilon,
        }
        if stats:
            tb.update({"loss/td": loss, "q/mean": q_mean})
        if info is not None:
            tb.update(
                {
                    "policy/lag": info.policy_lag,
                    "replay/size": info.size,
                    "replay/samples_per_insert": info.samples_per_insert,
                }
            )
        if recent is not None:
            tb["episode/return_recent"] = recent
        self.metrics.scalars(p.env_steps, tb)

    def _weight_server_series(self) -> list[Series]:
        w = self.weights.publisher
        return [
            Series(
                "dqn_learner_weight_subscribers",
                "gauge",
                "open WatchWeights streams",
                w.subscribers,
            ),
            Series(
                "dqn_learner_weights_bytes",
                "gauge",
                "bytes of one published version",
                w.message_bytes,
            ),
            Series(
                "dqn_learner_weights_publish_bytes",
                "gauge",
                "bytes the latest version costs to broadcast (subscribers x size)",
                w.publish_bytes,
            ),
            Series(
                "dqn_learner_weights_sent_bytes_total", "counter", "weight bytes sent", w.bytes_sent
            ),
            Series(
                "dqn_learner_weights_skipped_total",
                "counter",
                "versions slow subscribers skipped (latest wins)",
                w.versions_skipped,
            ),
        ]

    def _series(self) -> list[Series]:
        """The learner's /metrics, read at scrape time (loss and rates: the latest
        progress report, every ``run.progress_every_seconds``)."""
        p, info, latest = self.progress, self._info, self._latest
        nan = float("nan")
        last_eval = p.evals[-1] if p.evals else None
        return [
            Series("dqn_learner_updates_total", "counter", "gradient updates", self.dqn.updates),
            Series("dqn_learner_env_steps_total", "counter", "fleet env steps seen", p.env_steps),
            Series(
                "dqn_learner_weights_version",
                "gauge",
                "version of the newest published weights",
                self.weights.publisher.version,
            ),
            *self._weight_server_series(),
            Series("dqn_learner_loss", "gauge", "Huber TD loss", latest.get("loss", nan)),
            Series(
                "dqn_learner_q_mean", "gauge", "mean Q(s, a) of a batch", latest.get("q_mean", nan)
            ),
            Series(
                "dqn_learner_updates_per_second",
                "gauge",
                "learner updates per second",
                latest.get("updates_per_s", nan),
            ),
            Series(
                "dqn_learner_env_steps_per_second",
                "gauge",
                "fleet env steps per second",
                latest.get("env_steps_per_s", nan),
            ),
            Series("dqn_learner_epsilon", "gauge", "actors' mean epsilon", p.epsilon),
            Series(
                "dqn_learner_policy_lag",
                "gauge",
                "learner version minus the actors' acting version (mean over actors)",
                info.policy_lag if info is not None else nan,
            ),
            Series(
                "dqn_learner_replay_size",
                "gauge",
                "replay transitions (latest Info)",
                info.size if info is not None else nan,
            ),
            Series(
                "dqn_learner_samples_per_insert",
                "gauge",
                "replay sampled / inserted (latest Info)",
                info.samples_per_insert if info is not None else nan,
            ),
            Series(
                "dqn_learner_episodes_total",
                "counter",
                "finished training episodes seen",
                self.metrics.episodes_total,
            ),
            Series(
                "dqn_learner_episode_return",
                "gauge",
                "mean return of the last 20 training episodes",
                latest.get("recent_return", nan),
            ),
            Series("dqn_learner_evaluations_total", "counter", "greedy evaluations", p.evaluations),
            Series(
                "dqn_learner_eval_return",
                "gauge",
                "mean return of the latest greedy evaluation",
                last_eval[3] if last_eval else nan,
            ),
            Series(
                "dqn_learner_solved",
                "gauge",
                "1 once the greedy evaluation reached the threshold",
                float(p.solved_at is not None),
            ),
        ]

    def finish(self, reason: str, stats: dict | None = None) -> dict:
        """Final progress report, evaluation, policy, checkpoint, summary and curve."""
        p = self.progress
        self._poll_replay()
        self._report(stats or {}, final=True)  # every run ends with its final figures
        if p.solved_at is None and (not p.evals or p.evals[-1][1] != self.dqn.updates):
            self._evaluate()
        if p.solved_at is None:
            export_policy(self.dqn.online, self.obs_shape, self.run_dir / "policy.pt")
        self.save_checkpoint()
        last = p.evals[-1] if p.evals else (0, 0, 0, float("nan"), float("nan"))
        solved = p.solved_at is not None
        summary = {
            "env_id": self.config.env.id,
            "solved": solved,
            "stop_reason": reason,
            "threshold": self.threshold,
            "seconds_to_solve": p.solved_at["seconds"] if solved else None,
            "env_steps_to_solve": p.solved_at["env_steps"] if solved else None,
            "updates_to_solve": p.solved_at["updates"] if solved else None,
            "eval_mean": p.solved_at["mean"] if solved else last[3],
            "eval_std": p.solved_at["std"] if solved else last[4],
            "env_steps": p.env_steps,
            "updates": self.dqn.updates,
            "episodes": self.metrics.episodes_total,
            "wall_seconds": self.elapsed(),
            "actors": self.num_actors,
            "envs_per_actor": self.config.actors.envs_per_actor,
            "device": str(self.device),
            "replay_bytes": self._info.obs_bytes if self._info is not None else 0,
            "seed": self.config.run.seed,
        }
        if self.priority_sender is not None:
            self.priority_sender.close()  # sends the rest, so the counts are final
            summary["priority_updates"] = {
                "sent": self.priority_sender.sent,
                "stale": self.priority_sender.stale,
                "dropped": self.priority_sender.dropped,
            }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.metrics.plot(*self._curve_args())
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
        self.evaluator.close()
        self.metrics.close()


def serve(
    config: Config,
    replay_address: str,
    *,
    resume: bool | str = False,
    ready_file: str | None = None,
    start_time: float | None = None,
    num_actors: int | None = None,
    security: Security | None = None,
) -> int:
    """Process entry: run until done or SIGTERM/SIGINT, always writing the outputs."""
    learner = LearnerProcess(
        config,
        replay_address,
        resume=resume,
        start_time=start_time,
        num_actors=num_actors,
        security=security,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: learner.stop_event.set())
    address = learner.start()
    rpc.write_ready_file(
        ready_file,
        address=address,
        port=learner.weights.port,
        device=str(learner.device),
        metrics_port=learner.telemetry.port,
    )
    log.info(
        "learner on %s, weights at %s, replay at %s, metrics %s",
        learner.device,
        address,
        replay_address,
        learner.telemetry.url or "off",
    )
    try:
        summary = learner.run()
    finally:
        learner.close()
    print(
        f"[{summary['wall_seconds']:6.1f}s] done: {summary['stop_reason']}; eval "
        f"{summary['eval_mean']:.1f} ± {summary['eval_std']:.1f}; {summary['env_steps']:,} env "
        f"steps, {summary['updates']:,} updates; run dir {config.run.dir}",
        flush=True,
    )
    return 0
