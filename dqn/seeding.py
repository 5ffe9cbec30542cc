"""One seed derivation for every process of a run.

``run.seed`` is the one number a user sets. Each consumer (an actor, the evaluator,
the learner, the replay server's sampler) gets its own independent stream from it
through :func:`derive`, numpy's ``SeedSequence`` over ``(run.seed, role, index)``,
so no two streams overlap and adding an actor changes no other actor's seed.
"""

from __future__ import annotations

import numpy as np

# Stable role codes: changing one changes that role's seeds in every run.
ROLES = {"actor": 1, "evaluator": 2, "learner": 3, "replay": 4, "policy_init": 5}


def derive(seed: int, role: str, index: int = 0) -> int:
    """A 31-bit seed for ``role`` number ``index`` of a run seeded with ``seed``."""
    if role not in ROLES:
        raise ValueError(f"role: must be one of {sorted(ROLES)}, got {role!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got {seed}, {index}")
    state = np.random.SeedSequence([seed, ROLES[role], index]).generate_state(1)
    return int(state[0] & 0x7FFF_FFFF)
