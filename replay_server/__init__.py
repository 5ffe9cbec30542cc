"""Central experience replay: bounded ring storage behind a gRPC service.

``storage`` (preallocated structure-of-arrays ring), ``rate_limiter`` (min size and
samples-per-insert band), ``validation`` (every batch checked before it is stored),
``service`` (the ``dqn.v1.ReplayService`` servicer) and ``server`` (process entry).
No Ray import here: the server runs and is tested without Ray.
"""
