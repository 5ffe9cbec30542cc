"""Math of the Rainbow-style parts: dueling head, IS weights and beta, the weighted
loss, TD priorities of the learner and of the actors, and the presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from actors.priority import td_priorities
from dqn import config as config_mod
from dqn import presets
from dqn.config import LearnerConfig, NetworkConfig
from dqn.networks import QNetwork, build_q_network
from learner.q_learning import DQNUpdate, beta_at, importance_weights

pytestmark = pytest.mark.unit


# -- dueling head ------------------------------------------------------------------
def test_dueling_head_is_value_plus_centred_advantage():
    net = QNetwork(obs_dim=2, n_actions=3, hidden=(2,), dueling=True)
    with torch.no_grad():
        body = net.body[1]
        body.weight.copy_(torch.eye(2))
        body.bias.zero_()
        net.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net.head.bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
        net.value.weight.copy_(torch.tensor([[2.0, -1.0]]))
        net.value.bias.copy_(torch.tensor([0.5]))
    q = net(torch.tensor([[1.0, 2.0]]))
    # z = relu([1, 2]) = [1, 2]; A = [1, 2, 6], mean 3; V = 2 - 2 + 0.5 = 0.5
    torch.testing.assert_close(q, torch.tensor([[0.5 - 2.0, 0.5 - 1.0, 0.5 + 3.0]]))


def test_dueling_switch_builds_the_value_stream():
    plain = build_q_network((4,), 2, NetworkConfig(dueling=False))
    duel = build_q_network((4,), 2, NetworkConfig(dueling=True))
    assert plain.value is None and isinstance(duel.value, nn.Linear)
    assert duel(torch.zeros(5, 4)).shape == (5, 2)


# -- importance weights and beta ------------------------------------------------------
def test_beta_anneals_linearly_to_one_and_stays():
    assert beta_at(0, 0.4, 100) == pytest.approx(0.4)
    assert beta_at(50, 0.4, 100) == pytest.approx(0.7)
    assert beta_at(100, 0.4, 100) == pytest.approx(1.0)
    assert beta_at(10_000, 0.4, 100) == pytest.approx(1.0)


def test_importance_weights_hand_computed():
    # N = 4 slots with probabilities 0.1, 0.2, 0.3, 0.4; sampled rows: 0.2, 0.4, 0.1.
    prob = torch.tensor([0.2, 0.4, 0.1])
    min_p = torch.full((3,), 0.1)
    w = importance_weights(prob, min_p, beta=0.5)
    # (N P)^-b / max (N P)^-b: (0.8^-.5, 1.6^-.5, 0.4^-.5) / 0.4^-.5
    expected = torch.tensor([0.8, 1.6, 0.4]) ** -0.5 / 0.4**-0.5
    torch.testing.assert_close(w, expected)
    assert float(w.max()) == pytest.approx(1.0)
    torch.testing.assert_close(importance_weights(prob, min_p, 0.0), torch.ones(3))


def tiny_update(**cfg) -> DQNUpdate:
    torch.manual_seed(0)
    net_cfg = NetworkConfig(hidden=(8,))
    online, target = build_q_network((2,), 2, net_cfg), build_q_network((2,), 2, net_cfg)
    return DQNUpdate(online, target, LearnerConfig(**cfg))


def batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {
        "obs": torch.randn(b, 2, generator=g),
        "action": torch.randint(0, 2, (b,), generator=g),
        "reward": torch.randn(b, generator=g),
        "next_obs": torch.randn(b, 2, generator=g),
        "terminated": torch.tensor([False, True, False, False])[:b],
        "discount": torch.full((b,), 0.9),
    }


def test_weighted_loss_and_td_abs_match_hand_computation():
    upd = tiny_update(priority_beta0=0.5, priority_beta_steps=10)
    data = batch()
    with torch.no_grad():
        q_all = upd.online(data["obs"])
        q = q_all.gather(1, data["action"][:, None]).squeeze(1)
        a_star = upd.online(data["next_obs"]).argmax(1, keepdim=True)
        next_v = upd.target(data["next_obs"]).gather(1, a_star).squeeze(1)
        y = data["reward"] + 0.9 * (~data["terminated"]).float() * next_v
    prob = torch.tensor([0.1, 0.2, 0.4, 0.1])
    data |= {"probability": prob, "min_probability": torch.full((4,), 0.05)}
    w = (0.05 / prob) ** 0.5  # beta at update 0 is beta0
    err = (y - q).abs()
    huber = torch.where(err < 1.0, 0.5 * err**2, err - 0.5)
    stats = upd.step(data)
    torch.testing.assert_close(stats["loss"], (w * huber).mean())
    torch.testing.assert_close(stats["td_abs"], err)


def test_uniform_batches_use_the_plain_mean():
    upd = tiny_update()
    data = batch()
    with torch.no_grad():
        q = upd.online(data["obs"]).gather(1, data["action"][:, None]).squeeze(1)
    with torch.no_grad():
        a_star = upd.online(data["next_obs"]).argmax(1, keepdim=True)
        next_v = upd.target(data["next_obs"]).gather(1, a_star).squeeze(1)
        err = (data["reward"] + 0.9 * (~data["terminated"]).float() * next_v - q).abs()
    stats = upd.step(data)
    huber = torch.where(err < 1.0, 0.5 * err**2, err - 0.5)
    torch.testing.assert_close(stats["loss"], huber.mean())
    assert "td_abs" not in stats  # the uniform path computes no priorities


# -- actor-side initial priorities ----------------------------------------------------
class TableNet(nn.Module):
    """Q(s) = the row of a table picked by s[0] (an integer id)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)

    def forward(self, obs):
        return self.table[obs[:, 0].long()]


def test_actor_td_priorities_hand_computed():
    net = TableNet([[1.0, 2.0], [0.5, -1.0], [3.0, 4.0]])
    obs = np.array([[0.0], [1.0], [0.0]], np.float32)
    action = np.array([1, 0, 0])
    reward = np.array([1.0, 0.25, -2.0], np.float32)
    next_obs = np.array([[2.0], [2.0], [1.0]], np.float32)
    terminated = np.array([False, True, False])
    discount = np.array([0.81, 0.9, 0.729], np.float32)
    p = td_priorities(net, obs, action, reward, next_obs, terminated, discount)
    # row 0: 1 + 0.81 * 4 - 2 = 2.24; row 1: |0.25 - 0.5| (no bootstrap);
    # row 2: |-2 + 0.729 * 0.5 - 1| = 2.6355
    np.testing.assert_allclose(p, [2.24, 0.25, 2.6355], rtol=1e-6)
    assert p.dtype == np.float32


# -- presets ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_builds_and_has_help(name):
    cfg = config_mod.load(preset=name, environ={})
    assert presets.PRESETS[name].help
    for section, values in presets.PRESETS[name].values.items():
        for field, value in values.items():
            assert getattr(getattr(cfg, section), field) == value, f"{section}.{field}"


def test_preset_is_under_file_environment_and_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[learner]\nlr = 0.5\n")
    cfg = config_mod.load(
        str(f),
        overrides={"learner": {"tau": "0.2"}},
        environ={"DQN_LEARNER__N_STEP": "5"},
        preset="rainbow-lite",
    )
    assert cfg.learner.lr == 0.5 and cfg.learner.tau == 0.2 and cfg.learner.n_step == 5
    assert cfg.replay.prioritized and cfg.network.dueling  # from the preset


def test_switches_differ_between_presets():
    classic = config_mod.load(preset="classic", environ={})
    rainbow = config_mod.load(preset="rainbow-lite", environ={})
    assert (classic.learner.target_update, rainbow.learner.target_update) == ("hard", "polyak")
    assert (classic.learner.n_step, classic.learner.double_dqn) == (1, False)
    assert not classic.replay.prioritized and rainbow.replay.prioritized


def test_unknown_preset_names_the_field():
    with pytest.raises(config_mod.ConfigError, match="preset: unknown preset 'x'"):
        config_mod.load(preset="x", environ={})
