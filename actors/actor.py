"""One actor: a vector env, a CPU copy of the Q-network, epsilon-greedy acting.

The loop only touches the adder (which writes batches) and the weight client (which
never blocks); it knows nothing of gRPC or Ray, so it also runs as a plain process.
Per vector step it does whole-array work only: one forward pass (numpy for the MLP,
so an MLP actor never imports torch; torch for the conv net), one epsilon-greedy
pick, one env step, one adder step. ``docs/actors.md`` has the profile.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading

import numpy as np

from actors import epsilon as schedules
from actors.adder import TransitionAdder
from actors.policy import EpsilonGreedy, build_policy
from actors.priority import td_priorities
from dqn import seeding
from dqn.config import Config
from dqn.envs import describe, make_vector_env, wire_dtype
from dqn.security import Security
from dqn.signals import stop_on_signals

log = logging.getLogger("actors.actor")
FIRST_WEIGHTS_TIMEOUT_S = 30.0


class Actor:
    def __init__(
        self, config: Config, actor_id: int, writer, weight_client, incarnation: int | None = None
    ):
        a = config.actors
        self.config = config
        self.actor_id = actor_id
        self.num_envs = a.envs_per_actor
        self.writer = writer
        self.weights = weight_client
        self.seed = seeding.derive(config.run.seed, "actor", actor_id)
        self.rng = np.random.default_rng(self.seed)
        self.env = make_vector_env(config.env, self.num_envs, seed=self.seed)
        obs_shape = self.env.single_observation_space.shape
        self.n_actions = int(self.env.single_action_space.n)
        # initial weights until the learner's arrive (their own stream of the seed)
        init = np.random.default_rng(seeding.derive(config.run.seed, "policy_init", actor_id))
        self.policy = build_policy(obs_shape, self.n_actions, config.network, init)
        self.explore = EpsilonGreedy(self.num_envs, self.n_actions, self.rng)
        if a.epsilon == "apex":
            total = a.num_actors * self.num_envs
            first = actor_id * self.num_envs
            self._apex = schedules.apex(total, a.apex_eps, a.apex_alpha)[
                np.arange(first, first + self.num_envs) % total
            ]
        else:
            self._apex = None
        self.adder = TransitionAdder(
            self.num_envs,
            writer,
            actor_id,
            incarnation if incarnation is not None else random.getrandbits(63),
            gamma=config.learner.gamma,
            n_step=config.learner.n_step,
            push_every=a.push_every,
            policy_version=lambda: self.weights.version,
            epsilon=self.current_epsilon_mean,
            priority_fn=(
                functools.partial(td_priorities, self.policy)
                if config.replay.prioritized and a.initial_priorities
                else None
            ),
            obs_dtype=wire_dtype(self.env.single_observation_space),
        )

    @property
    def net(self):
        """The policy as a torch module (``dqn.networks``) holding the current weights;
        imports torch, so the acting loop never uses it."""
        if hasattr(self.policy, "net"):
            return self.policy.net
        import torch

        from dqn.networks import build_q_network

        net = build_q_network(
            self.env.single_observation_space.shape, self.n_actions, self.config.network
        )
        net.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in self.policy.state_dict().items()}
        )
        return net.eval()

    def epsilon(self) -> np.ndarray | float:
        if self._apex is not None:
            return self._apex
        a = self.config.actors
        # The learner's count carries the schedule across actor restarts and resumes.
        fleet_steps = max(self.adder.env_steps * a.num_actors, self.weights.env_steps)
        return schedules.linear(fleet_steps, a.eps_start, a.eps_end, a.eps_decay_steps)

    def current_epsilon_mean(self) -> float:
        eps = self.epsilon()
        return eps if isinstance(eps, float) else float(np.mean(eps))

    def run(self, stop: threading.Event, max_steps: int | None = None) -> int:
        """Act until ``stop`` is set (or ``max_steps`` vector steps); returns env steps."""
        # Act with the learner's weights (and its exploration position) from the first
        # step; if the learner is not up yet, start anyway with the local init.
        if not self.weights.wait_first(FIRST_WEIGHTS_TIMEOUT_S):
            log.warning(
                "actor %d: no weights after %.0fs; acting with initial weights",
                self.actor_id,
                FIRST_WEIGHTS_TIMEOUT_S,
            )
        obs, _ = self.env.reset(seed=self.seed)
        self.adder.observe_first(obs)
        poll = self.config.actors.weight_poll_steps
        policy, explore, env, adder, weights = (
            self.policy,
            self.explore,
            self.env,
            self.adder,
            self.weights,
        )
        step = 0
        while not stop.is_set() and (max_steps is None or step < max_steps):
            if step % poll == 0:
                weights.update(policy)
            actions = explore(policy(obs), self.epsilon())
            obs, reward, terminated, truncated, _ = env.step(actions)
            adder.add(actions, reward, obs, terminated, truncated)
            step += 1
        adder.flush()
        return adder.env_steps

    def close(self) -> None:
        self.env.close()


def run_actor_process(
    config: Config,
    actor_id: int,
    replay_address: str,
    weights_address: str,
    stop: threading.Event | None = None,
    security: Security | None = None,
) -> None:
    """Entry of a plain-process actor (no Ray): runs until SIGTERM/SIGINT."""

    from actors.replay_client import GrpcReplayWriter
    from actors.weight_client import GrpcWeightClient

    stop = stop or threading.Event()
    stop_on_signals(stop)
    mb = config.replay.max_message_mb
    writer = GrpcReplayWriter(replay_address, max_message_mb=mb, security=security, stop=stop)
    weights = GrpcWeightClient(weights_address, max_message_mb=mb, security=security)
    actor = Actor(config, actor_id, writer, weights)
    log.info(
        "actor %d (pid %d) acting on %s x%d",
        actor_id,
        os.getpid(),
        describe(config.env),
        actor.num_envs,
    )
    try:
        actor.run(stop)
    finally:
        writer.close()
        weights.close()
        actor.close()
