"""dqn.td (the TD targets) and learner.q_learning (the DQN update step)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dqn.config import LearnerConfig, NetworkConfig
from dqn.networks import build_q_network
from dqn.td import td_targets
from learner.q_learning import DQNUpdate

pytestmark = pytest.mark.unit

# Online and target nets disagree on the best next action in both rows.
NEXT_Q_ONLINE = torch.tensor([[1.0, 5.0], [2.0, 0.0]])  # argmax: 1, 0
NEXT_Q_TARGET = torch.tensor([[10.0, 3.0], [4.0, 8.0]])  # argmax: 0, 1
REWARD = torch.tensor([1.0, 2.0])
DISCOUNT = torch.tensor([0.5, 0.25])
NOT_DONE = torch.tensor([False, False])


def test_double_dqn_uses_online_argmax_and_target_value():
    y = td_targets(REWARD, NOT_DONE, DISCOUNT, NEXT_Q_ONLINE, NEXT_Q_TARGET, double=True)
    # row 0: a* = 1, Q_target = 3 -> 1 + 0.5 * 3; row 1: a* = 0, Q_target = 4 -> 2 + 0.25 * 4
    torch.testing.assert_close(y, torch.tensor([2.5, 3.0]))


def test_vanilla_dqn_uses_target_max():
    y = td_targets(REWARD, NOT_DONE, DISCOUNT, NEXT_Q_ONLINE, NEXT_Q_TARGET, double=False)
    # row 0: max 10 -> 1 + 5; row 1: max 8 -> 2 + 2
    torch.testing.assert_close(y, torch.tensor([6.0, 4.0]))


@pytest.mark.parametrize("double", [True, False])
def test_terminated_cuts_the_bootstrap(double):
    terminated = torch.tensor([True, False])
    y = td_targets(REWARD, terminated, DISCOUNT, NEXT_Q_ONLINE, NEXT_Q_TARGET, double=double)
    assert y[0].item() == pytest.approx(1.0)  # reward only
    assert y[1].item() == pytest.approx(3.0 if double else 4.0)
    y_all = td_targets(
        REWARD, torch.tensor([True, True]), DISCOUNT, NEXT_Q_ONLINE, NEXT_Q_TARGET, double=double
    )
    torch.testing.assert_close(y_all, REWARD)


def test_discount_gamma_power_n_is_applied():
    gamma, n = 0.9, 3
    discount = torch.full((2,), gamma**n)
    y = td_targets(torch.zeros(2), NOT_DONE, discount, NEXT_Q_ONLINE, NEXT_Q_TARGET, double=True)
    torch.testing.assert_close(y, torch.tensor([0.729 * 3.0, 0.729 * 4.0]))
    y0 = td_targets(REWARD, NOT_DONE, torch.zeros(2), NEXT_Q_ONLINE, NEXT_Q_TARGET)
    torch.testing.assert_close(y0, REWARD)


# -- DQNUpdate ---------------------------------------------------------------------
def nets(seed: int = 0):
    torch.manual_seed(seed)
    cfg = NetworkConfig(hidden=(16,))
    return build_q_network((3,), 2, cfg), build_q_network((3,), 2, cfg)


def fixed_batch(b: int = 32, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(b, 3, generator=g),
        "action": torch.randint(0, 2, (b,), generator=g),
        "reward": torch.randn(b, generator=g),
        "next_obs": torch.randn(b, 3, generator=g),
        "terminated": torch.rand(b, generator=g) < 0.2,
        "discount": torch.full((b,), 0.99),
    }


def params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_target_starts_as_copy_and_is_frozen():
    online, target = nets()
    DQNUpdate(online, target, LearnerConfig())
    for o, t in zip(online.parameters(), target.parameters(), strict=True):
        torch.testing.assert_close(o, t)
        assert not t.requires_grad


def test_steps_reduce_the_loss_on_a_fixed_batch():
    online, target = nets()
    cfg = LearnerConfig(lr=1e-2, target_update="hard", target_period=10_000)
    upd = DQNUpdate(online, target, cfg)
    batch = fixed_batch()
    first = upd.step(batch)["loss"].item()
    for _ in range(30):
        stats = upd.step(batch)
    assert upd.updates == 31
    assert stats["loss"].item() < 0.75 * first
    assert not stats["loss"].requires_grad


def test_step_moves_online_net():
    online, target = nets()
    upd = DQNUpdate(online, target, LearnerConfig(target_update="hard", target_period=100))
    before = params(online)
    upd.step(fixed_batch())
    assert any(not torch.equal(a, b) for a, b in zip(before, online.parameters(), strict=True))


def test_hard_update_copies_at_target_period():
    online, target = nets()
    upd = DQNUpdate(online, target, LearnerConfig(target_update="hard", target_period=3, lr=1e-2))
    initial = params(target)
    batch = fixed_batch()
    for _ in range(2):
        upd.step(batch)
        for t, t0 in zip(target.parameters(), initial, strict=True):
            torch.testing.assert_close(t, t0)  # unchanged before the period
    upd.step(batch)  # update 3: copy
    for o, t in zip(online.parameters(), target.parameters(), strict=True):
        torch.testing.assert_close(t, o, rtol=0, atol=0)
    upd.step(batch)  # update 4: target stays at the update-3 copy, online moves on
    assert any(
        not torch.equal(o, t) for o, t in zip(online.parameters(), target.parameters(), strict=True)
    )


def test_polyak_moves_target_by_tau_exactly():
    online, target = nets()
    upd = DQNUpdate(online, target, LearnerConfig(target_update="polyak", tau=0.5))
    with torch.no_grad():
        for p in online.parameters():
            p.fill_(2.0)
        for p in target.parameters():
            p.fill_(0.0)
    upd._update_target()
    for p in target.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1.0), rtol=0, atol=0)
    upd._update_target()
    for p in target.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1.5), rtol=0, atol=0)


def test_polyak_after_a_step_uses_the_updated_online_params():
    online, target = nets()
    upd = DQNUpdate(online, target, LearnerConfig(target_update="polyak", tau=0.5, lr=1e-2))
    t0 = params(target)
    upd.step(fixed_batch())
    for t, t_before, o in zip(target.parameters(), t0, online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.5 * t_before + 0.5 * o.detach())


def test_grad_clip_bounds_the_step():
    # Adam normalises gradient scale, so check clipping via the gradient norm instead.
    online, target = nets()
    upd = DQNUpdate(online, target, LearnerConfig(grad_clip=0.01, lr=1e-3))
    batch = fixed_batch()
    batch["reward"] = batch["reward"] * 1000
    upd.step(batch)
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in online.parameters()])
    )
    assert norm.item() <= 0.01 + 1e-6
