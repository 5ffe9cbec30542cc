"""Ray's token-auth notice ("Token authentication is enabled for this Ray cluster ...")
is not shown when the project starts a local Ray; Ray's other warnings still are."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_the_filter_drops_rays_own_notice_and_nothing_else():
    """The logger name and text match what this Ray emits (a Ray upgrade that moves or
    rewords the notice fails here), and only that record is dropped."""
    from ray._private.authentication import authentication_token_setup as setup

    from actors import fleet

    logger = logging.getLogger(fleet.RAY_TOKEN_AUTH_LOGGER)
    assert logger is setup.logger

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    keep = Keep()
    logger.addHandler(keep)
    try:
        setup._warn_token_auth_enabled()
        (notice,) = keep.messages  # the unfiltered notice, as Ray words it
        assert notice.startswith(fleet.RAY_TOKEN_AUTH_NOTICE)
        keep.messages.clear()
        logger.addFilter(fleet._not_the_token_auth_notice)
        setup._warn_token_auth_enabled()
        setup._warn_token_auth_disabled()  # a real security warning: still shown
        logger.warning("something else")
    finally:
        logger.removeFilter(fleet._not_the_token_auth_notice)
        logger.removeHandler(keep)
    assert len(keep.messages) == 2, keep.messages
    assert keep.messages[0].startswith("Token authentication is disabled")
    assert keep.messages[1] == "something else"


@pytest.mark.integration
def test_a_local_ray_starts_without_the_token_auth_notice():
    code = (
        "import ray\n"
        "from actors.fleet import init_ray, shutdown_ray\n"
        "init_ray('local', num_cpus=1)\n"
        "print('cpus', ray.cluster_resources().get('CPU'), flush=True)\n"
        "shutdown_ray()\n"
    )
    # RAY_AUTH_MODE unset: Ray's default, which prints the notice
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    both = out.stdout + out.stderr
    assert out.returncode == 0, both[-3000:]
    assert "cpus 1.0" in out.stdout, both[-3000:]  # Ray really started
    assert "Token authentication is enabled" not in both, both[-3000:]
