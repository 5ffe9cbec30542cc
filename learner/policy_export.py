"""The exported policy: ``policy.pt``, a TorchScript Q-network for ``dqn evaluate``."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from dqn import weights as weights_codec
from dqn.v1 import replay_pb2 as pb

log = logging.getLogger("learner")


def export_policy(net: torch.nn.Module, obs_shape, path: Path) -> None:
    """TorchScript policy: float32 ``[B, *obs_shape]`` -> Q-values ``[B, n_actions]``
    (image observations: pixel values 0..255, uint8 or float32)."""
    cpu_net = copy.deepcopy(net).to("cpu").eval()
    example = torch.zeros((2, *obs_shape), dtype=torch.float32)
    with torch.no_grad():
        scripted = torch.jit.trace(cpu_net, example)
    tmp = path.with_suffix(".tmp")
    scripted.save(str(tmp))
    tmp.replace(path)


def export_version(net: torch.nn.Module, weights: pb.Weights, obs_shape, path: Path) -> None:
    """:func:`export_policy` of the published ``weights`` (in a copy of ``net``)."""
    cpu_net = copy.deepcopy(net).to("cpu")
    cpu_net.load_state_dict(weights_codec.from_proto(weights))
    export_policy(cpu_net, obs_shape, path)


def export_solving(publisher, version: int, net: torch.nn.Module, obs_shape, path: Path) -> None:
    """``policy.pt`` from the weights of ``version`` (a solving evaluation's) if the
    publisher still keeps them, else from ``net`` (the newest weights)."""
    weights = publisher.kept(version)
    if weights is None:  # the evaluator was far behind
        log.warning("version %d is no longer kept; exporting the newest weights", version)
        export_policy(net, obs_shape, path)
    else:
        export_version(net, weights, obs_shape, path)
