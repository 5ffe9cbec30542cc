"""The DQN update captured once as a CUDA graph and replayed for every batch.

A small MLP update is a few dozen tiny kernels; launched one by one from Python the
GPU waits on the host most of the time. Captured, one ``replay()`` launches them all.
What a graph needs, and how this provides it:

- static inputs: ``step(batch)`` copies the batch (already on the device) into fixed
  buffers of shape ``[B, ...]``, so the batch size is fixed at construction;
- no host sync inside: :meth:`DQNUpdate.sgd_step` has none (clipping uses a clamp,
  not an ``if``); Adam runs with ``capturable=True`` (its step counters on the GPU);
- warm-up before capture: the first ``warmup`` batches run eagerly on a side stream
  (real updates, counted), which creates Adam's state and the gradients' buffers;
- the hard target copy (a host-side period check) stays outside the graph.
"""

from __future__ import annotations

import torch

from dqn.interfaces import TRANSITION_COLUMNS
from learner.q_learning import DQNUpdate


class CapturedUpdate:
    """Wraps a :class:`DQNUpdate` on CUDA; ``step(batch)`` is a drop-in for its ``step``."""

    def __init__(self, dqn: DQNUpdate, batch_size: int, warmup: int = 3):
        device = next(dqn.online.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"learner.cuda_graph: needs the networks on CUDA, not {device}")
        if warmup < 1:
            raise ValueError(f"warmup: must be >= 1, got {warmup}")
        self.dqn = dqn
        self.batch_size = batch_size
        self.warmup = warmup
        for group in dqn.optimizer.param_groups:
            group["capturable"] = True  # step counters stay on the device
        self.graph: torch.cuda.CUDAGraph | None = None
        self._static: dict[str, torch.Tensor] = {}
        self._stats: dict[str, torch.Tensor] = {}
        self._eager_steps = 0
        self._stream = torch.cuda.Stream(device)

    @property
    def updates(self) -> int:
        return self.dqn.updates

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.graph is None:
            self._check_shape(batch)
            if self._eager_steps < self.warmup:
                self._eager_steps += 1
                return self._eager(batch)
            self._capture(batch)
        else:
            for name in TRANSITION_COLUMNS:
                self._static[name].copy_(batch[name], non_blocking=True)
        self.graph.replay()
        self.dqn.updates += 1
        if self.dqn.cfg.target_update == "hard":
            self.dqn._update_target()
        return self._stats

    def _check_shape(self, batch: dict[str, torch.Tensor]) -> None:
        n = batch["action"].shape[0]
        if n != self.batch_size:
            raise ValueError(f"batch: {n} rows, the captured update takes {self.batch_size}")

    def _eager(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        current = torch.cuda.current_stream()
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            stats = self.dqn.step(batch)
        current.wait_stream(self._stream)
        return stats

    def _capture(self, batch: dict[str, torch.Tensor]) -> None:
        """Record one update on static copies of ``batch`` (recording runs nothing)."""
        self._static = {name: batch[name].clone() for name in TRANSITION_COLUMNS}
        torch.cuda.synchronize()
        self.dqn.optimizer.zero_grad(set_to_none=True)  # grads get allocated in the graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._stats = self.dqn.sgd_step(self._static)
        self.graph = graph
