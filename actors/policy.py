"""Acting policies: epsilon-greedy over the Q-values of the actor's copy of the network.

* :func:`epsilon_greedy`: a pure function of Q-values, epsilon and an RNG.
* :class:`EpsilonGreedy`: the same rule for the acting loop, with its uniform draws
  made a block of steps at a time (three small array operations per step).
* :class:`NumpyQNetwork`: the forward pass of :class:`dqn.networks.QNetwork` (the MLP,
  plain or dueling) in numpy, from that module's own ``state_dict`` (same keys, same
  shapes; anything else is refused). ``dqn.networks.QNetwork`` stays the one
  definition; ``tests/unit/test_numpy_policy.py`` checks the two agree. At batch 8 it
  costs a few microseconds and keeps torch out of the actor's process.
* :class:`TorchPolicy`: any torch Q-network (the conv one for images) behind the same
  interface, tuned for tiny batches (inference mode, one thread).

Both policies take ``[B, *obs_shape]`` arrays and return float32 Q-values ``[B, A]``;
``load_state_dict`` takes a mapping of numpy arrays (as the weight client decodes them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def epsilon_greedy(
    q_values: np.ndarray, epsilon: np.ndarray | float, rng: np.random.Generator
) -> np.ndarray:
    """Actions ``[E]`` int64 from Q-values ``[E, A]``: argmax, or uniform with prob. eps."""
    num, n_actions = q_values.shape
    greedy = q_values.argmax(axis=1)
    explore = rng.random(num) < epsilon
    random_actions = rng.integers(0, n_actions, size=num)
    return np.where(explore, random_actions, greedy).astype(np.int64)


class EpsilonGreedy:
    """:func:`epsilon_greedy` for ``num_envs`` envs, step after step, with the uniform
    draws and random actions drawn ``block`` steps at a time."""

    def __init__(self, num_envs: int, n_actions: int, rng: np.random.Generator, block: int = 1024):
        self.num_envs, self.n_actions, self.rng, self.block = num_envs, n_actions, rng, block
        self._k = block

    def __call__(self, q_values: np.ndarray, epsilon: np.ndarray | float) -> np.ndarray:
        if self._k == self.block:
            shape = (self.block, self.num_envs)
            self._u = self.rng.random(shape)
            self._random = self.rng.integers(0, self.n_actions, size=shape)
            self._k = 0
        k = self._k
        self._k = k + 1
        return np.where(self._u[k] < epsilon, self._random[k], q_values.argmax(axis=1))


def mlp_state_keys(n_hidden: int, dueling: bool) -> list[str]:
    """The ``state_dict`` keys of ``dqn.networks.QNetwork`` (``nn.Sequential`` body of
    Flatten, then Linear/ReLU pairs: the Linears are at odd indices)."""
    keys = []
    for k in range(n_hidden):
        keys += [f"body.{2 * k + 1}.weight", f"body.{2 * k + 1}.bias"]
    keys += ["head.weight", "head.bias"]
    if dueling:
        keys += ["value.weight", "value.bias"]
    return keys


class NumpyQNetwork:
    """``dqn.networks.QNetwork``'s forward pass in numpy (float32)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int], dueling: bool = False):
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        self.hidden, self.dueling = tuple(int(h) for h in hidden), bool(dueling)
        widths = [self.obs_dim, *self.hidden]
        shapes = {}
        for k in range(len(self.hidden)):
            shapes[f"body.{2 * k + 1}.weight"] = (widths[k + 1], widths[k])
            shapes[f"body.{2 * k + 1}.bias"] = (widths[k + 1],)
        shapes["head.weight"], shapes["head.bias"] = (self.n_actions, widths[-1]), (self.n_actions,)
        if self.dueling:
            shapes["value.weight"], shapes["value.bias"] = (1, widths[-1]), (1,)
        self.shapes = shapes
        self._state: dict[str, np.ndarray] = {}
        self._buffers: dict[int, list[np.ndarray]] = {}  # batch size -> hidden activations

    def init(self, rng: np.random.Generator) -> NumpyQNetwork:
        """Random weights as ``torch.nn.Linear`` initialises them: U(-1/sqrt(fan_in), +)."""
        state = {}
        for name, shape in self.shapes.items():
            fan_in = self.shapes[name.rsplit(".", 1)[0] + ".weight"][1]
            bound = 1.0 / np.sqrt(fan_in)
            state[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
        self.load_state_dict(state)
        return self

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Take ``QNetwork.state_dict()``-shaped arrays (exactly its keys and shapes)."""
        if set(state) != set(self.shapes):
            missing, extra = set(self.shapes) - set(state), set(state) - set(self.shapes)
            raise ValueError(
                f"state_dict: missing keys {sorted(missing)}, unexpected keys {sorted(extra)}"
            )
        for name, shape in self.shapes.items():
            if tuple(np.shape(state[name])) != shape:
                got = list(np.shape(state[name]))
                raise ValueError(f"state_dict[{name}]: shape {got}, expected {list(shape)}")
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}

        # W.T made contiguous once per version: the forward pass is x @ W.T, ~10% faster
        # at batch 8 than over the transposed view
        def t(name: str) -> np.ndarray:
            return np.ascontiguousarray(arrays[name].T)

        n = len(self.hidden)
        self._layers = [
            (t(f"body.{2 * k + 1}.weight"), arrays[f"body.{2 * k + 1}.bias"]) for k in range(n)
        ]
        self._head = (t("head.weight"), arrays["head.bias"])
        self._value = (t("value.weight"), arrays["value.bias"]) if self.dueling else None
        self._state = arrays

    def state_dict(self) -> dict[str, np.ndarray]:
        return dict(self._state)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Q-values ``[B, n_actions]`` float32 of observations ``[B, *obs_shape]`` (a new
        array each call). The hidden activations go into buffers kept per batch size,
        so one network serves one thread at a time."""
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), self.obs_dim)
        hidden = self._buffers.get(len(x))
        if hidden is None:
            if len(self._buffers) >= 8:  # batch sizes seen: the loop's E, a few others
                self._buffers.clear()
            hidden = [np.empty((len(x), w.shape[1]), np.float32) for w, _ in self._layers]
            self._buffers[len(x)] = hidden
        for (w, b), out in zip(self._layers, hidden, strict=True):
            np.dot(x, w, out=out)
            out += b
            np.maximum(out, 0.0, out=out)
            x = out
        w, b = self._head
        adv = np.dot(x, w)
        adv += b
        if self._value is None:
            return adv
        w, b = self._value
        v = np.dot(x, w)
        v += b
        return v + adv - adv.mean(axis=1, keepdims=True)


class TorchPolicy:
    """A torch Q-network behind the numpy interface, for tiny batches: inference mode,
    one intra-op thread, observations shared with numpy (``as_tensor``, no copy)."""

    def __init__(self, net):
        import torch

        self._torch = torch
        torch.set_num_threads(1)
        self.net = net.eval()
        self.net.requires_grad_(False)

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        torch = self._torch
        self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.net(self._torch.as_tensor(obs)).float().numpy()


def build_policy(obs_shape: Sequence[int], n_actions: int, cfg, rng: np.random.Generator):
    """A :class:`NumpyQNetwork` for vector observations (the MLP; no torch imported),
    a :class:`TorchPolicy` over ``dqn.networks.build_q_network`` for images."""
    if len(obs_shape) != 3:
        obs_dim = int(np.prod(obs_shape, dtype=np.int64))
        return NumpyQNetwork(obs_dim, n_actions, cfg.hidden, cfg.dueling).init(rng)
    import torch

    from dqn.networks import build_q_network

    torch.manual_seed(int(rng.integers(2**62)))
    return TorchPolicy(build_q_network(obs_shape, n_actions, cfg))
