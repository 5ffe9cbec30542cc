"""Initial priorities of new transitions, computed by the actor (Ape-X).

The actor has only its local copy of the online network, so the bootstrap uses it
for both the argmax and the value (Double DQN needs a target network it lacks):

    |delta| = |r + discount * (1 - terminated) * max_a Q(s', a) - Q(s, a)|

with ``discount = gamma ** m`` from the n-step adder. These are raw priorities; the
replay server applies ``(|delta| + eps) ** alpha``.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def td_priorities(
    net: torch.nn.Module,
    obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    next_obs: np.ndarray,
    terminated: np.ndarray,
    discount: np.ndarray,
) -> np.ndarray:
    """``|n-step TD error|`` ``[N]`` float32 of ``N`` transitions (columns as in the batch)."""
    n = len(action)
    both = torch.as_tensor(np.concatenate([obs, next_obs]), dtype=torch.float32)
    q = net(both)  # [2N, A], one forward pass for both ends
    q_sa = q[:n].gather(1, torch.as_tensor(action, dtype=torch.int64).unsqueeze(1)).squeeze(1)
    next_v = q[n:].max(dim=1).values
    mask = torch.as_tensor(~np.asarray(terminated, bool), dtype=torch.float32)
    y = (
        torch.as_tensor(reward, dtype=torch.float32)
        + torch.as_tensor(discount, dtype=torch.float32) * mask * next_v
    )
    return (y - q_sa).abs().numpy().astype(np.float32)
