"""Shared core of the distributed DQN service.

Everything the parts (``actors``, ``replay_server``, ``learner``, ``deploy``) have
in common lives here: configuration, the Q-network, the tensor<->proto codec, the
env factory with the probe environments, gRPC helpers and the generated stubs
(``dqn.v1``). Parts import from this package, never from each other.
"""

__version__ = "0.1.0"
