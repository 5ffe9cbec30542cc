"""Wiring: the local single-node launcher, the fleet driver, evaluation of a run.

This is the one place that knows the topology: servers first, then the clients
handed to the components. Dockerfile and cluster manifests live beside it.
"""
