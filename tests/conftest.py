"""Shared fixtures: real gRPC servers on 127.0.0.1, port 0, always stopped afterwards."""

from __future__ import annotations

import pytest

from dqn.config import build


def make_config(**sections):
    """A validated Config from ``section={field: value}`` keyword arguments."""
    return build(sections)


@pytest.fixture
def replay_server_factory():
    """``start(obs_shape=(4,), n_actions=2, obs_dtype=None, **replay_fields)`` -> a started
    ReplayServer (obs_dtype None: float32).

    Other sections can be passed as dicts: ``start(learner={"batch_size": 8})``.
    """
    from replay_server.server import ReplayServer

    servers = []

    def start(obs_shape=(4,), n_actions=2, obs_dtype=None, **fields):
        sections = {k: fields.pop(k) for k in list(fields) if isinstance(fields[k], dict)}
        # no replay ratio unless a test asks: most push without anyone sampling
        replay = {
            "capacity": 1_000,
            "min_size": 1,
            "host": "127.0.0.1",
            "port": 0,
            "samples_per_insert": 0.0,
            **fields,
        }
        config = make_config(replay=replay, **sections)
        server = ReplayServer(config, obs_shape, n_actions, obs_dtype=obs_dtype)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop(grace=0.5)


@pytest.fixture
def replay_server(replay_server_factory):
    """A ReplayServer for obs ``[4]`` float32 and 2 actions, capacity 1000, min_size 1."""
    return replay_server_factory()


@pytest.fixture
def weight_server():
    from learner.weight_server import WeightServer

    server = WeightServer("127.0.0.1", 0)
    server.start()
    yield server
    server.stop(grace=0.5)
