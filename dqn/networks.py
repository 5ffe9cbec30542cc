"""The Q-networks shared by actors (CPU copy), learner and the exported policy.

:func:`build_q_network` picks :class:`ConvQNetwork` for image observations
(``[C, H, W]``, rank 3) and the MLP :class:`QNetwork` for anything else.
"""

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


class ConvQNetwork(nn.Module):
    """Conv Q-network for images: ``[B, C, H, W]`` pixel values 0..255 (uint8, or float
    holding the same values) -> Q-values ``[B, n_actions]``.

    Pixels are scaled by 1/255 inside, so uint8 frames travel and are stored as they
    are and become float only on the device that runs the net. Torso (small, so a
    CPU learner keeps up): convolutions 4x4/2 (16 channels), 4x4/2 (32), 3x3/2 (32)
    with ReLU, about 1.9M multiply-adds for a [2, 40, 80] input; then the MLP of
    ``hidden`` sizes and the (optionally dueling) head of :class:`QNetwork`.
    """

    def __init__(
        self, obs_shape: Sequence[int], n_actions: int, hidden: Sequence[int], dueling: bool = False
    ):
        super().__init__()
        c, h, w = (int(d) for d in obs_shape)
        self.torso = nn.Sequential(
            nn.Conv2d(c, 16, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.torso(torch.zeros(1, c, h, w)).shape[1]
        self.mlp = QNetwork(flat, n_actions, hidden, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.torso(obs.to(torch.float32) * (1.0 / 255.0)))


def build_q_network(obs_shape: Sequence[int], n_actions: int, cfg: NetworkConfig) -> nn.Module:
    """A ConvQNetwork for image observations ``[C, H, W]``, else an MLP QNetwork."""
    if len(obs_shape) == 3:
        return ConvQNetwork(obs_shape, n_actions, cfg.hidden, cfg.dueling)
    obs_dim = 1
    for d in obs_shape:
        obs_dim *= int(d)
    return QNetwork(obs_dim, n_actions, cfg.hidden, cfg.dueling)
