"""The learner: DQN update, batch prefetch, weight publishing, evaluation, checkpoints.

No Ray import here: the learner runs as a plain process (on a GPU machine too).
"""
