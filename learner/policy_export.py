"""The run's policy files (:mod:`dqn.policy_file`, safetensors, no pickle):

* ``policy.safetensors``: the solving version's weights (:meth:`PolicyExporter.solving`),
  or, for a run that stops otherwise, its last weights (:meth:`PolicyExporter.final`);
* ``best_policy.safetensors``: the version with the best evaluation mean seen. A report's
  version is pinned in the publisher while the learner records it (``Begin``, see
  :mod:`learner.evaluations`), so :meth:`PolicyExporter.offer` copies those weights when
  a better report arrives; :meth:`PolicyExporter.save_best` writes them (with every
  checkpoint and at the end). A resumed run keeps the best mean of the file it left.

``python -m learner.policy_export RUN_DIR`` re-exports an older run (one that left a
TorchScript ``policy.pt``) from its checkpoint: ``RUN_DIR/policy.safetensors`` of the
checkpoint's last weights.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import torch

from dqn import policy_file
from dqn import weights as weights_codec
from dqn.config import Config
from dqn.policy_file import PolicyInfo
from dqn.v1 import replay_pb2 as pb

log = logging.getLogger("learner")


def policy_info(config: Config, kind: str, **fields) -> PolicyInfo:
    """The header of a policy file of ``config``'s env and network."""
    env = config.env
    return PolicyInfo(
        obs_shape=tuple(env.obs_shape),
        obs_dtype=env.obs_dtype or "float32",
        n_actions=int(env.n_actions),
        network={"hidden": list(config.network.hidden), "dueling": config.network.dueling},
        env_id=env.id,
        kind=kind,
        **fields,
    )


def export_policy(
    net: torch.nn.Module, path: Path, config: Config, kind: str = "final", **fields
) -> None:
    """``net``'s weights as a policy file (``fields``: :class:`PolicyInfo`'s version,
    updates, env_steps, eval_mean)."""
    policy_file.save(path, net.state_dict(), policy_info(config, kind, **fields))


def _proto_fields(weights: pb.Weights) -> dict:
    return {"version": weights.version, "updates": weights.updates, "env_steps": weights.env_steps}


class PolicyExporter:
    """Writes the run's policy files from the publisher's versions (see the module)."""

    def __init__(self, config: Config, publisher, run_dir: Path, resumed: bool = False):
        self.config, self.publisher = config, publisher
        self.path = run_dir / policy_file.FILE_NAME
        self.best_path = run_dir / policy_file.BEST_FILE_NAME
        self.best_mean = -math.inf
        self._best: tuple[dict, PolicyInfo] | None = None  # not yet written
        if resumed and self.best_path.exists():
            try:
                self.best_mean = policy_file.read(self.best_path)[1].eval_mean or -math.inf
            except (OSError, ValueError) as exc:
                log.warning("%s is unreadable (%s); a new best replaces it", self.best_path, exc)

    def _write(self, path: Path, weights: pb.Weights, kind: str, eval_mean) -> None:
        info = policy_info(self.config, kind, **_proto_fields(weights), eval_mean=eval_mean)
        policy_file.save(path, weights_codec.from_proto(weights), info)

    def solving(self, record) -> None:
        """``policy.safetensors`` of the solving ``record``'s version; if the publisher
        no longer keeps it (the evaluator was far behind), of the newest version."""
        weights = self.publisher.kept(record.version)
        if weights is None:
            log.warning("version %d is no longer kept; exporting the newest", record.version)
            self._write(self.path, self.publisher.kept(self.publisher.version), "solved", None)
        else:
            self._write(self.path, weights, "solved", record.mean)

    def final(self, net: torch.nn.Module, updates: int, env_steps: int, last_eval) -> None:
        """``policy.safetensors`` of ``net``, the run's last weights (``updates``); with
        their version and evaluation when they were published and played."""
        newest = self.publisher.kept(self.publisher.version)
        if newest is not None and newest.updates == updates:
            played = last_eval is not None and last_eval.version == newest.version
            self._write(self.path, newest, "final", last_eval.mean if played else None)
        else:  # not published (stopped by a signal, or no final evaluation asked for)
            export_policy(net, self.path, self.config, updates=updates, env_steps=env_steps)

    def offer(self, record) -> None:
        """A recorded evaluation: keep a copy of its weights if it is the best so far
        (call while its version is still pinned)."""
        if not record.mean > self.best_mean:
            return
        weights = self.publisher.kept(record.version)
        if weights is None:
            log.info("version %d (eval %.2f) is no longer kept", record.version, record.mean)
            return
        self.best_mean = record.mean
        info = policy_info(self.config, "best", **_proto_fields(weights), eval_mean=record.mean)
        self._best = (weights_codec.from_proto(weights), info)

    def save_best(self) -> None:
        """Write ``best_policy.safetensors`` if a better version arrived since."""
        if self._best is not None:
            policy_file.save(self.best_path, *self._best)
            self._best = None


def export_checkpoint(run_dir: str | Path) -> Path:
    """``RUN_DIR/policy.safetensors`` from the last weights of ``checkpoints/learner.pt``."""
    from dqn import config as config_mod
    from learner import checkpoint

    run = Path(run_dir)
    path = run / "checkpoints" / "learner.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no checkpoint to export from; train again")
    state = checkpoint.load(path, torch.device("cpu"))
    saved = state["config"]
    config = config_mod.build({"env": saved["env"], "network": saved["network"]})
    config.env.require_spec()
    progress = state.get("progress", {})
    info = policy_info(
        config,
        "checkpoint",
        updates=int(progress.get("updates", 0)),
        env_steps=int(progress.get("env_steps", 0)),
    )
    policy_file.save(run / policy_file.FILE_NAME, state["online"], info)
    return run / policy_file.FILE_NAME


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m learner.policy_export RUN_DIR")
    try:
        print(f"wrote {export_checkpoint(sys.argv[1])}")
    except (OSError, ValueError, KeyError) as exc:  # ConfigError and PolicyFileError too
        sys.exit(f"python -m learner.policy_export: {exc}")
