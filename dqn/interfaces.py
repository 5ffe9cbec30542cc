"""The small core of interfaces the parts depend on (not on each other).

The acting loop::

    while running:
        weights.update(policy)                      # WeightClient: never blocks
        actions = policy(obs)                       # epsilon-greedy on a CPU Q-net
        next_obs, reward, terminated, truncated, _ = env.step(actions)
        adder.add(actions, reward, next_obs, terminated, truncated)  # -> ReplayWriter

The learning loop::

    batch = sampler.next()                          # ReplaySampler: prefetched
    update(batch)
    if updates % K == 0: source.publish(state_dict) # WeightSource
"""

from __future__ import annotations

from typing import Protocol

from dqn.v1 import replay_pb2 as pb

# The columns of a transition, in wire order (TransitionBatch, SampleResponse, storage).
TRANSITION_COLUMNS = ("obs", "action", "reward", "next_obs", "terminated", "discount")


class ReplayWriter(Protocol):
    """Takes finished TransitionBatches; may block to apply backpressure."""

    def write(self, batch: pb.TransitionBatch) -> None: ...

    def close(self) -> None: ...


class ReplaySampler(Protocol):
    """Hands out training batches (dicts of arrays/tensors, leading dim B)."""

    def next(self) -> dict: ...

    def close(self) -> None: ...


class WeightSource(Protocol):
    """Publishes versioned weights (the learner side)."""

    def publish(self, state_dict: dict, updates: int, env_steps: int) -> int: ...


class WeightClient(Protocol):
    """Keeps a local network current (the actor side) without blocking the caller."""

    version: int  # weights version loaded by the last update()
    env_steps: int  # fleet env steps the learner had seen at that version

    def wait_first(self, timeout: float) -> bool: ...

    def update(self, net) -> bool: ...

    def close(self) -> None: ...
