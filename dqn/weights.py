"""Q-network weights <-> ``dqn.v1.Weights`` (versioned, raw-bytes tensors)."""

from __future__ import annotations

import numpy as np
import torch

from dqn import codec
from dqn.v1 import replay_pb2 as pb


def to_proto(
    state_dict: dict[str, torch.Tensor], version: int, updates: int = 0, env_steps: int = 0
) -> pb.Weights:
    msg = pb.Weights(version=version, updates=updates, env_steps=env_steps)
    for name, tensor in state_dict.items():
        param = msg.params.add(name=name)
        codec.encode(tensor.detach().to("cpu", torch.float32).numpy(), param.tensor)
    return msg


def from_proto(msg: pb.Weights) -> dict[str, torch.Tensor]:
    return {
        p.name: torch.from_numpy(np.array(codec.decode(p.tensor, f"params[{p.name}]")))
        for p in msg.params
    }
