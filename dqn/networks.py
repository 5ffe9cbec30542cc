"""The Q-network shared by actors (CPU copy), learner and the exported policy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dqn.config import NetworkConfig


class QNetwork(nn.Module):
    """MLP Q-network: float32 ``[B, *obs_shape]`` -> Q-values ``[B, n_actions]``.

    With ``dueling`` the last hidden layer feeds a value stream ``V [B, 1]`` and an
    advantage stream ``A [B, n_actions]``, combined as ``V + A - mean(A)``.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int], dueling: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.dueling = dueling
        self.head = nn.Linear(width, n_actions)
        self.value = nn.Linear(width, 1) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z = self.body(obs)
        adv = self.head(z)
        if self.value is None:
            return adv
        return self.value(z) + adv - adv.mean(dim=1, keepdim=True)


def build_q_network(obs_shape: Sequence[int], n_actions: int, cfg: NetworkConfig) -> QNetwork:
    obs_dim = 1
    for d in obs_shape:
        obs_dim *= int(d)
    return QNetwork(obs_dim, n_actions, cfg.hidden, cfg.dueling)
