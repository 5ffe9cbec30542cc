"""replay_server.sum_tree and replay_server.priorities: the math of prioritized replay."""

from __future__ import annotations

import numpy as np
import pytest

from replay_server.priorities import Priorities
from replay_server.sum_tree import MinTree, SumTree

pytestmark = pytest.mark.unit

# 99.9% quantile of the chi-square distribution with 15 degrees of freedom.
CHI2_15_999 = 37.697


def chi_square(counts: np.ndarray, expected_p: np.ndarray) -> float:
    expected = expected_p * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("capacity", [1, 2, 5, 8, 13, 1000])
def test_root_is_the_sum_and_min_for_any_capacity(capacity):
    rng = np.random.default_rng(capacity)
    values = rng.random(capacity) + 0.1
    s, m = SumTree(capacity), MinTree(capacity)
    s.update(np.arange(capacity), values)
    m.update(np.arange(capacity), values)
    assert s.total == pytest.approx(values.sum(), rel=1e-12)
    assert m.min == values.min()
    np.testing.assert_array_equal(s.leaves, values)


def test_batched_update_with_repeats_and_partial_leaves():
    s = SumTree(6)
    s.update(np.array([0, 3, 5]), np.array([1.0, 2.0, 4.0]))
    assert s.total == 7.0
    s.update(np.array([3, 3, 1]), np.array([9.0, 0.5, 3.0]))  # last write wins on 3
    np.testing.assert_array_equal(s.leaves, [1.0, 3.0, 0.0, 0.5, 0.0, 4.0])
    assert s.total == 8.5
    # Every internal node is the sum of its children.
    internal = np.arange(1, s.leaf0)
    np.testing.assert_allclose(s.nodes[internal], s.nodes[2 * internal] + s.nodes[2 * internal + 1])


def test_many_updates_do_not_accumulate_rounding_error():
    rng = np.random.default_rng(0)
    s = SumTree(100)
    for _ in range(500):
        idx = rng.integers(0, 100, 17)
        s.update(idx, rng.random(17) * 1e6)
    assert s.total == pytest.approx(s.leaves.sum(), rel=1e-12)


def test_find_prefix_sums_hand_computed():
    s = SumTree(4)
    s.update(np.arange(4), np.array([1.0, 0.0, 2.0, 3.0]))  # intervals [0,1) [1,1) [1,3) [3,6)
    mass = np.array([0.0, 0.999, 1.0, 2.5, 2.999, 3.0, 5.999])
    np.testing.assert_array_equal(s.find(mass), [0, 0, 2, 2, 2, 3, 3])


def test_find_never_returns_an_empty_slot_even_at_the_edge():
    s = SumTree(8)
    s.update(np.arange(3), np.array([0.1, 0.2, 0.3]))  # slots 3..7 empty
    edge = np.array([s.total, np.nextafter(s.total, 0), s.total * (1 + 1e-12)])
    assert set(s.find(edge).tolist()) <= {0, 1, 2}


def test_min_tree_ignores_empty_slots():
    m = MinTree(10)
    m.update(np.array([2, 7]), np.array([0.5, 0.25]))
    assert m.min == 0.25
    m.update(np.array([7]), np.array([3.0]))
    assert m.min == 0.5


def test_load_rebuilds_the_tree():
    s = SumTree(5)
    s.load(np.array([1.0, 2.0, 3.0]))
    assert s.total == 6.0
    np.testing.assert_array_equal(s.find(np.array([0.5, 1.5, 5.5])), [0, 1, 2])


def test_stratified_sampling_frequencies_match_priorities():
    """Chi-square goodness of fit with a fixed seed: the sampler draws slot j with
    probability p_j / sum(p); a uniform sampler fails the same test by far."""
    rng = np.random.default_rng(1234)
    priorities = np.arange(1, 17, dtype=np.float64) ** 2  # 1 .. 256, far from uniform
    s = SumTree(16)
    s.update(np.arange(16), priorities)
    draws = s.sample_stratified(batch_size=32, num_batches=500, rng=rng)
    counts = np.bincount(draws, minlength=16)
    expected = priorities / priorities.sum()
    assert chi_square(counts, expected) < CHI2_15_999
    uniform_counts = np.bincount(rng.integers(0, 16, len(draws)), minlength=16)
    assert chi_square(uniform_counts, expected) > 100 * CHI2_15_999


def test_stratified_batches_cover_every_segment():
    s = SumTree(4)
    s.update(np.arange(4), np.ones(4))
    draws = s.sample_stratified(4, 50, np.random.default_rng(0)).reshape(50, 4)
    # With equal priorities each of the 4 segments is exactly one slot.
    np.testing.assert_array_equal(draws, np.tile(np.arange(4), (50, 1)))


# -- Priorities (the server's PER state) -----------------------------------------------
def test_weights_are_eps_shifted_and_raised_to_alpha_on_the_server():
    p = Priorities(8, alpha=0.5, eps=0.01)
    p.on_insert(np.array([0, 1]), np.array([0.0, 0.99], np.float32))
    np.testing.assert_allclose(p.sum.leaves[:2], [0.01**0.5, 1.0**0.5], rtol=1e-6)


def test_new_transitions_without_priority_get_the_largest_weight_seen():
    p = Priorities(8, alpha=1.0, eps=0.0 + 1e-9)
    p.on_insert(np.array([0]), None)
    assert p.sum.leaves[0] == 1.0  # nothing seen yet: 1
    p.on_insert(np.array([1]), np.array([5.0], np.float32))
    p.on_insert(np.array([2]), None)
    assert p.sum.leaves[2] == pytest.approx(5.0)


def test_sample_probabilities_and_min_probability():
    p = Priorities(4, alpha=1.0, eps=1e-9)
    p.on_insert(np.arange(3), np.array([1.0, 2.0, 5.0], np.float32))
    index, key, prob, min_prob = p.sample(3, 2, np.random.default_rng(0))
    np.testing.assert_allclose(prob, np.array([1.0, 2.0, 5.0])[index] / 8.0, rtol=1e-6)
    assert min_prob == pytest.approx(1.0 / 8.0)
    np.testing.assert_array_equal(key, index + 1)  # keys 1, 2, 3 in write order


def test_stale_updates_are_ignored():
    p = Priorities(2, alpha=1.0, eps=1e-9)
    p.on_insert(np.array([0, 1]), np.array([1.0, 1.0], np.float32))
    index, key, _, _ = p.sample(2, 1, np.random.default_rng(0))
    p.on_insert(np.array([0]), np.array([1.0], np.float32))  # slot 0 overwritten
    stale = p.update(np.array([0, 1]), np.array([1, 2]), np.array([7.0, 3.0], np.float32))
    assert stale == 1
    np.testing.assert_allclose(p.sum.leaves, [1.0, 3.0], rtol=1e-6)


def test_state_round_trip():
    p = Priorities(10, alpha=0.6, eps=1e-3)
    p.on_insert(np.arange(6), np.linspace(0, 2, 6).astype(np.float32))
    q = Priorities(10, alpha=0.6, eps=1e-3)
    q.load_state(p.state(6), 6)
    np.testing.assert_array_equal(q.sum.leaves, p.sum.leaves)
    np.testing.assert_array_equal(q.keys, p.keys)
    assert (q.next_key, q.max_weight, q.min.min) == (p.next_key, p.max_weight, p.min.min)
    r = Priorities(10, alpha=0.6, eps=1e-3)
    r.load_state(None, 4)  # a uniform server's checkpoint: weight 1 each
    assert r.sum.total == 4.0 and r.next_key == 5
