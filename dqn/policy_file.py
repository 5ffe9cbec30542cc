"""The policy file, ``policy.safetensors``: a Q-network's weights and what rebuilds it,
with no pickle involved.

The file is plain `safetensors <https://huggingface.co/docs/safetensors>`_: an 8-byte
little-endian header length, a JSON header, then the raw tensor bytes. The tensors are
the network's ``state_dict`` (float32, the keys of :mod:`dqn.networks`); the header's
``__metadata__`` (string to string, as safetensors requires) holds ``format``
(``dqn-policy``), ``format_version`` and the fields of :class:`PolicyInfo`: strings as
they are, anything else as JSON. Reading it parses JSON and copies bytes: nothing is
unpickled, no code in the file runs.

``load_policy(path)`` (also ``dqn.load_policy``) rebuilds the network with
:func:`dqn.networks.build_q_network` and returns a :class:`Policy` with ``predict`` and
``q_values``. Plain torch reads it too: ``safetensors.torch.load_file(path)`` gives the
state dict, ``safetensors.safe_open(path, "pt").metadata()`` the header (docs/policy.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from dqn.config import ConfigError, NetworkConfig
from dqn.files import atomic_write_bytes
from dqn.networks import build_q_network

FORMAT = "dqn-policy"
FORMAT_VERSION = 1
FILE_NAME = "policy.safetensors"  # the run's policy: the solving version or the last one
BEST_FILE_NAME = "best_policy.safetensors"  # the version with the best evaluation
LEGACY_FILE_NAME = "policy.pt"  # TorchScript, written by dqn before format 1
OBS_DTYPES = ("float32", "uint8")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save and TorchScript files are zip archives
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class PolicyFileError(ValueError):
    """A file that is not a policy this version reads; the message names the file."""


@dataclass(frozen=True)
class PolicyInfo:
    """What a policy file says about its network and where its weights come from."""

    obs_shape: tuple[int, ...]  # one observation's shape
    obs_dtype: str  # float32, or uint8 for images (pixel values 0..255)
    n_actions: int
    network: dict  # the config's network section: hidden, dueling
    env_id: str
    kind: str = ""  # "solved", "final", "best" (or "checkpoint": re-exported)
    version: int | None = None  # the weights version published (None: never published)
    updates: int = 0
    env_steps: int = 0
    eval_mean: float | None = None  # the greedy mean return of these weights, if known

    def to_metadata(self) -> dict[str, str]:
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            meta[f.name] = value if isinstance(value, str) else json.dumps(value)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], where: str) -> PolicyInfo:
        values = {}
        for f in dataclasses.fields(cls):
            raw = meta.get(f.name)
            if raw is None:
                if f.default is dataclasses.MISSING:
                    raise PolicyFileError(f"{where}: header field {f.name!r} is missing")
                continue
            values[f.name] = _field(f.name, raw, where)
        return cls(**values)


def _field(name: str, raw: str, where: str) -> Any:
    """One header field, decoded and checked."""
    if name in ("env_id", "kind", "obs_dtype"):
        value = raw
    else:
        try:
            value = json.loads(raw)
        except ValueError:
            raise PolicyFileError(f"{where}: header field {name}: not JSON: {raw[:80]!r}") from None
    ok = {
        "obs_shape": lambda v: isinstance(v, list) and v and all(_is_int(d) and d >= 1 for d in v),
        "obs_dtype": lambda v: v in OBS_DTYPES,
        "n_actions": lambda v: _is_int(v) and v >= 1,
        "network": lambda v: isinstance(v, dict),
        "version": lambda v: v is None or (_is_int(v) and v >= 0),
        "updates": lambda v: _is_int(v) and v >= 0,
        "env_steps": lambda v: _is_int(v) and v >= 0,
        "eval_mean": lambda v: v is None or (_is_number(v) and math.isfinite(v)),
    }.get(name, lambda v: True)
    if not ok(value):
        raise PolicyFileError(f"{where}: header field {name}: bad value {raw[:80]!r}")
    return tuple(value) if name == "obs_shape" else value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# -- writing ------------------------------------------------------------------------------
def save(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], info: PolicyInfo) -> None:
    """Write ``state_dict`` (float32 on the CPU) and ``info`` to ``path``, atomically."""
    tensors = {
        name: t.detach().to("cpu", torch.float32).contiguous().clone()
        for name, t in state_dict.items()
    }
    atomic_write_bytes(path, save_tensors(tensors, metadata=info.to_metadata()))


# -- reading ------------------------------------------------------------------------------
def _legacy_error(path: Path) -> PolicyFileError:
    run = path.parent
    return PolicyFileError(
        f"{path}: a TorchScript policy from an older dqn; this version reads only "
        f"{FILE_NAME} (no pickle; see docs/policy.md). Re-export it from the run's "
        f"checkpoint with `python -m learner.policy_export {run}` (writes {run / FILE_NAME} "
        "from checkpoints/learner.pt, the run's last weights), or train again"
    )


def read_header(data: bytes, where: str) -> dict[str, Any]:
    """The JSON header of safetensors bytes (``__metadata__`` and the tensor entries)."""
    if data[:4] == _ZIP_MAGIC:
        raise _legacy_error(Path(where))
    if len(data) < 8:
        raise PolicyFileError(f"{where}: not a safetensors file ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise PolicyFileError(f"{where}: not a safetensors file (header size {size:,} bytes)")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise PolicyFileError(f"{where}: not a safetensors file (header: {exc})") from None
    if not isinstance(header, dict):
        raise PolicyFileError(f"{where}: not a safetensors file (header is not an object)")
    return header


def read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], PolicyInfo]:
    """The state dict and the :class:`PolicyInfo` of the policy file ``path``."""
    path = Path(path)
    data = path.read_bytes()
    where = str(path)
    meta = read_header(data, where).get("__metadata__")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise PolicyFileError(
            f"{where}: not a dqn policy file (header format {found!r}, expected {FORMAT!r})"
        )
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) < 1:
        raise PolicyFileError(f"{where}: header field format_version: bad value {version!r}")
    if int(version) > FORMAT_VERSION:
        raise PolicyFileError(
            f"{where}: policy format version {version}, written by a newer dqn; this one "
            f"reads version {FORMAT_VERSION} (upgrade dqn)"
        )
    info = PolicyInfo.from_metadata(meta, where)
    try:
        tensors = load_tensors(data)
    except SafetensorError as exc:
        raise PolicyFileError(f"{where}: unreadable tensors: {exc}") from None
    return tensors, info


def build_network(state_dict: dict[str, torch.Tensor], info: PolicyInfo, where: str):
    """The :mod:`dqn.networks` Q-network ``info`` describes, holding ``state_dict``."""
    try:
        cfg = NetworkConfig(**info.network)
    except (TypeError, ConfigError) as exc:
        raise PolicyFileError(f"{where}: header field network: {exc}") from None
    net = build_q_network(info.obs_shape, info.n_actions, cfg)
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state_dict.items()}
    if want != have:
        wrong = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
        raise PolicyFileError(
            f"{where}: the tensors do not match the network its header describes "
            f"(obs_shape {list(info.obs_shape)}, n_actions {info.n_actions}, network "
            f"{info.network}): {', '.join(wrong[:4])}"
        )
    net.load_state_dict(state_dict)
    return net.eval()


class Policy:
    """A greedy policy loaded from a policy file: ``predict(obs)`` -> action(s),
    ``q_values(obs)`` -> Q-values. ``obs`` is one observation of shape ``obs_shape``
    or a batch ``[B, *obs_shape]`` (numpy, torch or nested lists); images take pixel
    values 0..255. Runs on the CPU; ``model`` is the torch module, to move elsewhere.
    The file's :class:`PolicyInfo` fields are attributes too (``env_id``,
    ``eval_mean``, ``version``, ``network``: the network config section...)."""

    def __init__(self, model: torch.nn.Module, info: PolicyInfo, path: Path):
        for f in dataclasses.fields(info):
            setattr(self, f.name, getattr(info, f.name))
        self.model, self.info, self.path = model, info, path

    def _batch(self, obs: Any) -> tuple[torch.Tensor, bool]:
        if isinstance(obs, torch.Tensor):
            obs = obs.detach().cpu().numpy()
        arr = np.asarray(obs)
        shape = self.info.obs_shape
        if arr.shape == shape:
            single = True
        elif arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
            single = False
        else:
            raise ValueError(
                f"obs: shape {tuple(arr.shape)}; this policy takes one observation of shape "
                f"{shape} or a batch of shape (B, {', '.join(map(str, shape))})"
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"obs: dtype {arr.dtype}; numbers expected")
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return (x.unsqueeze(0) if single else x), single

    def q_values(self, obs: Any) -> np.ndarray:
        """Q-values, float32: ``[n_actions]`` for one observation, ``[B, n_actions]``
        for a batch."""
        x, single = self._batch(obs)
        with torch.inference_mode():
            q = self.model(x).numpy()
        return q[0] if single else q

    def predict(self, obs: Any) -> int | np.ndarray:
        """The greedy action: an ``int`` for one observation, ``[B]`` int64 for a batch."""
        x, single = self._batch(obs)
        with torch.inference_mode():
            actions = self.model(x).argmax(dim=1).numpy()
        return int(actions[0]) if single else actions

    def __repr__(self) -> str:
        i = self.info
        mean = "unknown" if i.eval_mean is None else f"{i.eval_mean:g}"
        return (
            f"Policy({i.env_id}: obs {i.obs_shape} {i.obs_dtype} -> {i.n_actions} actions; "
            f"{i.kind or 'policy'} at {i.updates:,} updates, eval mean {mean}; {self.path})"
        )


def policy_path(path: str | os.PathLike) -> Path:
    """The policy file ``path`` names: itself, or in a run dir its ``policy.safetensors``."""
    path = Path(path)
    if path.is_dir():
        found = path / FILE_NAME
        if not found.exists() and (path / LEGACY_FILE_NAME).exists():
            raise _legacy_error(path / LEGACY_FILE_NAME)
        if not found.exists():
            raise FileNotFoundError(f"{found} not found (has the run finished?)")
        return found
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return path


def load_policy(path: str | os.PathLike) -> Policy:
    """The greedy policy of a run dir (its ``policy.safetensors``) or of a policy file
    (such as ``RUN/best_policy.safetensors``). Raises FileNotFoundError, or
    :class:`PolicyFileError` for a file that is not a policy this version reads."""
    file = policy_path(path)
    state_dict, info = read(file)
    return Policy(build_network(state_dict, info, str(file)), info, file)
