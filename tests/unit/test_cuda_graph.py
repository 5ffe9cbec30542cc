"""learner.cuda_graph: the captured update. On CPU only its refusals and the split of
DQNUpdate.step it relies on can run; the equivalence test needs CUDA."""

from __future__ import annotations

import pytest
import torch

from dqn.config import LearnerConfig
from learner.cuda_graph import CapturedUpdate
from learner.q_learning import DQNUpdate
from tests.unit.test_q_learning import fixed_batch, nets, params

pytestmark = pytest.mark.unit


def test_refuses_networks_on_cpu_naming_the_setting():
    online, target = nets()
    with pytest.raises(ValueError, match="learner.cuda_graph"):
        CapturedUpdate(DQNUpdate(online, target, LearnerConfig()), batch_size=32)


def test_sgd_step_leaves_counter_and_hard_copy_to_step():
    online, target = nets()
    upd = DQNUpdate(online, target, LearnerConfig(target_update="hard", target_period=1))
    before = params(target)
    upd.sgd_step(fixed_batch())
    assert upd.updates == 0
    for t, t0 in zip(target.parameters(), before, strict=True):
        torch.testing.assert_close(t, t0, rtol=0, atol=0)  # the copy belongs to step()
    upd.step(fixed_batch())
    assert upd.updates == 1
    for o, t in zip(online.parameters(), target.parameters(), strict=True):
        torch.testing.assert_close(t, o, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("target_update", ["polyak", "hard"])
def test_captured_update_matches_eager_updates(target_update):
    cfg = LearnerConfig(lr=1e-2, target_update=target_update, target_period=4)
    dev = torch.device("cuda")
    eager_nets = [n.to(dev) for n in nets()]
    graph_nets = [n.to(dev) for n in nets()]
    eager = DQNUpdate(*eager_nets, cfg)
    graph = CapturedUpdate(DQNUpdate(*graph_nets, cfg), batch_size=32, warmup=2)
    for i in range(10):  # 2 eager warm-up steps, the capture, then replays
        batch = {k: v.to(dev) for k, v in fixed_batch(seed=i).items()}
        a, b = eager.step(batch), graph.step(batch)
        torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-4, atol=1e-5)
    assert graph.updates == eager.updates == 10
    for net_a, net_b in zip(eager_nets, graph_nets, strict=True):
        for p, q in zip(net_a.parameters(), net_b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch: 8 rows"):
        graph.step({k: v[:8].to(dev) for k, v in fixed_batch().items()})
