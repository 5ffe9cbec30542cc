"""Experience collection: env loop, epsilon schedules, the adder, weight client, fleet.

The loop (``actor.Actor``) only calls the adder and the weight client; gRPC lives in
``replay_client`` and ``weight_client``; Ray lives only in ``fleet``.
"""
