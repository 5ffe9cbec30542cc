"""The TD target, written once for numpy arrays (the actors' initial priorities) and
torch tensors (the learner's update, on the GPU and inside a CUDA graph).

    y = r + discount * (1 - terminated) * Q_value(s', a*),  a* = argmax_a Q_select(s', a)

Double DQN selects with the online network and values with the target network; plain
DQN (and an actor, which has only its online copy) passes the same Q-values twice, so
``a*`` is the max. ``discount`` is ``gamma ** n`` of an n-step transition.

The arithmetic is shared; only three primitives differ between the two libraries
(argmax along the action axis, the pick of one column per row, the select of a
terminal row), so they sit in a two-entry table chosen by the input's type. Torch is
never imported here: an input can only be a tensor if torch is already loaded, which
keeps torch out of an actor's process. The torch path has no host sync and no
data-dependent shape, so :mod:`learner.cuda_graph` can capture it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


class _Numpy:
    @staticmethod
    def argmax(x):  # [B, A] -> [B, 1]
        return np.argmax(x, axis=1, keepdims=True)

    @staticmethod
    def take(x, index):  # x [B, A], index [B, 1] -> [B]
        return np.take_along_axis(x, index, axis=1)[:, 0]

    @staticmethod
    def zero_where(cond, x):  # cond, x [B] -> [B]
        return np.where(cond, np.zeros((), x.dtype), x)


class _Torch:
    @staticmethod
    def argmax(x):
        return x.argmax(dim=1, keepdim=True)

    @staticmethod
    def take(x, index):
        return x.gather(1, index).squeeze(1)

    @staticmethod
    def zero_where(cond, x):
        return x.masked_fill(cond, 0.0)


def _ops(x: Any):
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return _Torch
    return _Numpy


def action_values(q: Any, action: Any) -> Any:
    """``Q(s, a)`` ``[B]`` of the taken actions: ``q`` ``[B, A]``, ``action`` ``[B]`` int64."""
    return _ops(q).take(q, action[:, None])


def td_targets(
    reward: Any,
    terminated: Any,
    discount: Any,
    next_q_online: Any,
    next_q_target: Any,
    double: bool = True,
) -> Any:
    """Bootstrapped targets ``[B]``, as numpy arrays or torch tensors (all inputs alike).

    reward, discount: ``[B]`` float; terminated: ``[B]`` bool; next_q_online,
    next_q_target: ``[B, A]``. ``a*`` is ``argmax next_q_online`` if ``double``, else
    ``argmax next_q_target``; the bootstrap value is ``next_q_target[a*]``.
    """
    ops = _ops(reward)
    best = ops.argmax(next_q_online if double else next_q_target)  # [B, 1]
    next_v = ops.take(next_q_target, best)  # [B]
    return reward + discount * ops.zero_where(terminated, next_v)
