"""The DQN update: Double-DQN targets (dqn.td), Huber loss, Adam, clipping, target updates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dqn.config import ConfigError, LearnerConfig
from dqn.td import action_values, td_targets


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("learner.device: 'cuda' requested but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def beta_at(updates: int, beta0: float, beta_steps: int) -> float:
    """Importance-sampling exponent: linear from ``beta0`` at update 0 to 1 at ``beta_steps``."""
    return beta0 + (1.0 - beta0) * min(updates / beta_steps, 1.0)


def importance_weights(
    probability: torch.Tensor, min_probability: torch.Tensor, beta: float
) -> torch.Tensor:
    """``w_i = (N P(i)) ** -beta / max_j (N P(j)) ** -beta = (P_min / P(i)) ** beta``, ``[B]``.

    ``P_min`` is the smallest probability over the stored transitions, so ``w <= 1``
    and the buffer size ``N`` cancels out.
    """
    return (min_probability / probability) ** beta


class DQNUpdate:
    """Owns the online and target networks and the optimizer; ``step(batch)`` updates once."""

    def __init__(self, online: nn.Module, target: nn.Module, cfg: LearnerConfig):
        self.cfg = cfg
        self.online = online
        self.target = target
        self.target.load_state_dict(online.state_dict())
        self.target.requires_grad_(False)
        # fused: one kernel for all parameters instead of a loop of small ops per tensor.
        self.optimizer = torch.optim.Adam(
            online.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True
        )
        self.updates = 0
        self._online_params = list(online.parameters())
        self._target_params = list(target.parameters())

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step on a batch of ``B`` transitions; returns detached stats."""
        stats = self.sgd_step(batch)
        self.updates += 1
        if self.cfg.target_update == "hard":
            self._update_target()
        return stats

    def sgd_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensor work of one update (no host sync, so a CUDA graph can capture it):
        targets, loss, gradients, clipping, Adam, and the Polyak target update."""
        obs, action, reward = batch["obs"], batch["action"], batch["reward"]
        next_obs, terminated, discount = batch["next_obs"], batch["terminated"], batch["discount"]
        with torch.no_grad():
            next_q_target = self.target(next_obs)  # [B, A]
            next_q_online = self.online(next_obs) if self.cfg.double_dqn else next_q_target
            y = td_targets(
                reward, terminated, discount, next_q_online, next_q_target, self.cfg.double_dqn
            )  # [B]
        q = action_values(self.online(obs), action)  # [B]
        if "probability" in batch:  # prioritized replay: correct the sampling bias
            beta = beta_at(self.updates, self.cfg.priority_beta0, self.cfg.priority_beta_steps)
            w = importance_weights(batch["probability"], batch["min_probability"], beta)  # [B]
            loss = (w * F.huber_loss(q, y, delta=self.cfg.huber_delta, reduction="none")).mean()
        else:
            loss = F.huber_loss(q, y, delta=self.cfg.huber_delta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self._online_params, self.cfg.grad_clip, foreach=True)
        self.optimizer.step()
        if self.cfg.target_update == "polyak":
            self._update_target()
        stats = {"loss": loss.detach(), "q_mean": q.detach().mean()}
        if "probability" in batch:  # td_abs [B]: the rows' new raw priorities
            stats["td_abs"] = (y - q).detach().abs()
        return stats

    @torch.no_grad()
    def _update_target(self) -> None:
        """Polyak (part of every update) or a hard copy every ``target_period`` updates."""
        if self.cfg.target_update == "polyak":
            torch._foreach_lerp_(self._target_params, self._online_params, self.cfg.tau)
        elif self.updates % self.cfg.target_period == 0:
            self.target.load_state_dict(self.online.state_dict())
