"""Per-actor bookkeeping of the replay server: dedup, policy versions, env steps.

Dedup is kept per ``(actor_id, incarnation)``: a batch is a duplicate when its
sequence is not above the last one accepted from the same actor *life*. Two lives
of one actor id (a zombie and its restarted copy after a partition) can therefore
interleave without either one's re-sends being stored twice.

Everything here is bounded, so no client can grow the server's memory or its Info
reply without limit:

* each actor keeps the dedup state of its ``INCARNATIONS_KEPT`` most recently heard
  lives; an older life's state expires (counted in ``incarnations_expired``). A
  re-send from an expired life is stored again: that needs more than
  ``INCARNATIONS_KEPT`` restarts of one actor id while the old life still sends;
* at most ``ACTORS_KEPT`` actors are tracked; past that, the actor heard from least
  recently is forgotten (counted in ``actors_expired``), its env steps folded into
  ``env_steps_retired`` so the fleet total stays right. Info lists the tracked
  actors only, so its reply stays a bounded size.

Counters a client reports (sequence, policy version, env steps) are refused above
``MAX_COUNTER`` = 2**53 by validation, and sums are saturated at 2**64 - 1, so one
client's impossible values can never make Info fail for everyone.

Not thread-safe: the servicer serialises access.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field

from dqn.v1 import replay_pb2 as pb

INCARNATIONS_KEPT = 4
ACTORS_KEPT = 4096
MAX_COUNTER = 1 << 53  # exact in float64; 285 years of 1M env steps/s
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1


def saturate(value: int) -> int:
    """``value`` clamped to what a uint64 field holds."""
    return min(max(int(value), 0), U64_MAX)


@dataclass
class Life:
    """One incarnation of an actor: its dedup cursor and its own env-step count."""

    last_sequence: int = 0
    env_steps: int = 0


@dataclass
class ActorState:
    # Display state: from the newest accepted batch of any life.
    last_sequence: int = 0
    policy_version: int = 0
    epsilon: float = 0.0
    incarnation: int = 0
    # incarnation -> Life, least recently heard first.
    lives: collections.OrderedDict[int, Life] = field(default_factory=collections.OrderedDict)
    env_steps_retired: int = 0  # steps of lives whose dedup state expired
    expired_now: int = 0  # lives expired by the latest record (counted by the book)

    def retire(self, life: Life) -> None:
        self.env_steps_retired += life.env_steps
        self.expired_now += 1

    @property
    def env_steps(self) -> int:
        return self.env_steps_retired + sum(life.env_steps for life in self.lives.values())


class ActorBook:
    """The bounded per-actor state; see the module docstring for the rules."""

    def __init__(self, actors_kept: int = ACTORS_KEPT, lives_kept: int = INCARNATIONS_KEPT):
        self.actors_kept = actors_kept
        self.lives_kept = lives_kept
        self.actors: collections.OrderedDict[int, ActorState] = collections.OrderedDict()
        self.env_steps_retired = 0  # steps of actors no longer tracked
        self._env_steps = 0  # env_steps(), kept as a running sum (read on every insert)
        self.actors_expired = 0
        self.incarnations_expired = 0

    def is_duplicate(self, batch: pb.TransitionBatch) -> bool:
        actor = self.actors.get(batch.actor_id)
        life = actor.lives.get(batch.incarnation) if actor is not None else None
        return life is not None and batch.sequence <= life.last_sequence

    def record(self, batch: pb.TransitionBatch) -> None:
        """``batch`` (validated, not a duplicate) was stored: move the cursors."""
        actor = _touch(self.actors, batch.actor_id, ActorState, self.actors_kept, self._forget)
        life = _touch(actor.lives, batch.incarnation, Life, self.lives_kept, actor.retire)
        self.incarnations_expired += actor.expired_now
        actor.expired_now = 0
        life.last_sequence = batch.sequence
        steps = max(life.env_steps, batch.actor_env_steps)
        self._env_steps += steps - life.env_steps  # retiring a life or an actor moves
        life.env_steps = steps  # its steps between counters: the sum stays
        actor.last_sequence = batch.sequence
        actor.incarnation = batch.incarnation
        actor.policy_version = batch.policy_version
        actor.epsilon = batch.epsilon

    def _forget(self, actor: ActorState) -> None:
        self.env_steps_retired += actor.env_steps
        self.actors_expired += 1

    def env_steps(self) -> int:
        """Env steps of the whole fleet, every life and every forgotten actor included."""
        return self._env_steps

    def _sum_env_steps(self) -> int:
        return self.env_steps_retired + sum(a.env_steps for a in self.actors.values())

    def fill_info(self, reply: pb.InfoResponse, learner_version: int) -> None:
        """Per-actor rows (by actor id), the env-step total and the mean policy lag."""
        lags = []
        for actor_id in sorted(self.actors):
            a = self.actors[actor_id]
            reply.actors.add(
                actor_id=actor_id,
                last_sequence=a.last_sequence,
                policy_version=a.policy_version,
                epsilon=a.epsilon,
                env_steps=saturate(a.env_steps),
                incarnation=a.incarnation,
            )
            lags.append(learner_version - a.policy_version)
        reply.env_steps = saturate(self.env_steps())
        reply.policy_lag = sum(lags) / len(lags) if lags else 0.0
        reply.learner_version = saturate(learner_version)
        reply.actors_expired = self.actors_expired
        reply.incarnations_expired = self.incarnations_expired

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "actors": {
                str(k): {
                    **{n: v for n, v in asdict(a).items() if n != "lives"},
                    "lives": [
                        [inc, life.last_sequence, life.env_steps] for inc, life in a.lives.items()
                    ],
                }
                for k, a in self.actors.items()
            },
            "env_steps_retired": self.env_steps_retired,
            "actors_expired": self.actors_expired,
            "incarnations_expired": self.incarnations_expired,
        }

    def load_state(self, state: dict) -> None:
        """Restore from :meth:`state`, or from the one-life-per-actor format of older
        checkpoints. Values are clamped to the bounds validation enforces, so a
        checkpoint written in an odd state can never make Info fail; an actor id no
        batch could carry, or a malformed entry, raises ValueError/KeyError/TypeError
        (the servicer turns them into CheckpointError before changing anything)."""
        self.actors.clear()
        if "actors" in state and "env_steps_retired" in state:
            actors = state["actors"]
            self.env_steps_retired = _clamp(state["env_steps_retired"])
            self.actors_expired = _clamp(state.get("actors_expired", 0))
            self.incarnations_expired = _clamp(state.get("incarnations_expired", 0))
        else:  # older format: {actor_id: {incarnation, last_sequence, ...}}
            actors = {k: _legacy(v) for k, v in state.items()}
            self.env_steps_retired = self.actors_expired = self.incarnations_expired = 0
        for key, a in actors.items():
            actor_id = int(key)
            if not 0 <= actor_id <= U32_MAX:  # no batch could have come from it
                raise ValueError(f"actor_id {actor_id} outside [0, 2**32)")
            lives = collections.OrderedDict(
                (_clamp_id(inc), Life(_clamp(seq), _clamp(steps))) for inc, seq, steps in a["lives"]
            )
            while len(lives) > self.lives_kept:
                lives.popitem(last=False)
            self.actors[actor_id] = ActorState(
                last_sequence=_clamp(a["last_sequence"]),
                policy_version=_clamp(a["policy_version"]),
                epsilon=min(max(float(a["epsilon"]), 0.0), 1.0),
                incarnation=_clamp_id(a["incarnation"]),
                lives=lives,
                env_steps_retired=_clamp(a["env_steps_retired"]),
            )
        while len(self.actors) > self.actors_kept:
            self._forget(self.actors.popitem(last=False)[1])
        self._env_steps = self._sum_env_steps()


def _touch(table: collections.OrderedDict, key, make, limit: int, retire):
    """``table[key]``, made with ``make()`` if new, as the most recent entry; past
    ``limit`` entries the least recent are handed to ``retire`` and dropped."""
    value = table.get(key)
    if value is None:
        value = table[key] = make()
        while len(table) > limit:
            retire(table.popitem(last=False)[1])
    else:
        table.move_to_end(key)
    return value


def _clamp(value) -> int:
    return min(max(int(value), 0), MAX_COUNTER)


def _clamp_id(value) -> int:
    """An incarnation as a uint64 field holds it."""
    return min(max(int(value), 0), U64_MAX)


def _legacy(a: dict) -> dict:
    return {
        "last_sequence": a["last_sequence"],
        "policy_version": a["policy_version"],
        "epsilon": a["epsilon"],
        "incarnation": a["incarnation"],
        "lives": [[a["incarnation"], a["last_sequence"], a["env_steps"]]],
        "env_steps_retired": a.get("env_steps_before", 0),
    }
