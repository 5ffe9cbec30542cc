"""The replay server's Prometheus series, read from the servicer's ``Info`` at scrape time."""

from __future__ import annotations

from dqn.telemetry import Series
from dqn.v1 import replay_pb2 as pb

# Ask Info for no episodes: a scrape must not copy the episode log.
_NO_EPISODES = pb.InfoRequest(episodes_after=(1 << 64) - 1)


def replay_series(servicer) -> list[Series]:
    """What ``Info`` reports, one consistent snapshot (taken under the servicer's lock)."""
    info = servicer.info(_NO_EPISODES)
    return [
        Series("dqn_replay_size", "gauge", "transitions held now", info.size),
        Series("dqn_replay_capacity", "gauge", "transitions the buffer can hold", info.capacity),
        Series("dqn_replay_inserted_total", "counter", "transitions inserted", info.inserted),
        Series("dqn_replay_sampled_total", "counter", "transitions sampled", info.sampled),
        Series(
            "dqn_replay_push_errors_total",
            "counter",
            "requests refused (invalid batch, unparsable message, over the size limit)",
            info.rejected_batches,
        ),
        Series(
            "dqn_replay_duplicate_batches_total",
            "counter",
            "re-sent batches dropped by (actor, incarnation, sequence)",
            info.duplicate_batches,
        ),
        Series(
            "dqn_replay_samples_per_insert",
            "gauge",
            "sampled / inserted transitions",
            info.samples_per_insert,
        ),
        Series(
            "dqn_replay_policy_lag",
            "gauge",
            "learner weights version minus the version each actor's newest batch was acted "
            "with, averaged over actors",
            info.policy_lag,
        ),
        Series("dqn_replay_actors", "gauge", "actors that have pushed", len(info.actors)),
        Series(
            "dqn_replay_env_steps_total", "counter", "env steps reported by actors", info.env_steps
        ),
        Series(
            "dqn_replay_episodes_total",
            "counter",
            "episodes reported by actors",
            info.episodes_total,
        ),
        Series("dqn_replay_obs_bytes", "gauge", "bytes preallocated for storage", info.obs_bytes),
    ]
