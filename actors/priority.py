"""Initial priorities of new transitions, computed by the actor (Ape-X).

The actor has only its local copy of the online network, so the bootstrap uses it
for both the argmax and the value (Double DQN needs a target network it lacks):

    |delta| = |r + discount * (1 - terminated) * max_a Q(s', a) - Q(s, a)|

with ``discount = gamma ** m`` from the n-step adder: :func:`dqn.td.td_targets` (the
learner's target, in numpy here) with the same Q-values for selection and value. These
are raw priorities; the replay server applies ``(|delta| + eps) ** alpha``.
"""

from __future__ import annotations

import numpy as np

from dqn.td import action_values, td_targets


def _q_values(net, x: np.ndarray) -> np.ndarray:
    """Q-values ``[B, A]`` as numpy from a policy (:mod:`actors.policy`) or a torch module."""
    if hasattr(net, "named_parameters"):  # a torch module
        import torch

        with torch.no_grad():
            return net(torch.as_tensor(x, dtype=torch.float32)).numpy()
    return np.asarray(net(x))


def td_priorities(
    net,
    obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    next_obs: np.ndarray,
    terminated: np.ndarray,
    discount: np.ndarray,
) -> np.ndarray:
    """``|n-step TD error|`` ``[N]`` float32 of ``N`` transitions (columns as in the batch)."""
    n = len(action)
    q = _q_values(net, np.concatenate([obs, next_obs])).astype(np.float32, copy=False)
    q_sa = action_values(q[:n], np.asarray(action, np.int64))  # one forward pass for both ends
    next_q = q[n:]
    y = td_targets(
        np.asarray(reward, np.float32),
        np.asarray(terminated, bool),
        np.asarray(discount, np.float32),
        next_q,
        next_q,
    )
    return np.abs(y - q_sa).astype(np.float32, copy=False)
