"""Start one Ray node of a cluster: ``python -m deploy.ray_node head|worker``.

The compose services ``ray-head`` and ``ray-worker`` and the loopback cluster test use
this instead of a bare ``ray start`` because several nodes may share one network
namespace (``network_mode: host``, or one machine): every node gets its own free
ports for the per-node agents, whose fixed defaults would collide. It also settles
two Ray 2.60 defaults a cluster cannot live with:

* **Node address.** In cluster mode Ray rewrites ``127.0.0.1`` to the machine's
  outward address; on a loopback-only machine use another loopback address such as
  ``127.0.0.2`` (``RAY_NODE_IP_ADDRESS``), which Ray leaves alone.
* **Authentication.** A node that finds no token may generate its own, which no
  other node shares. ``RAY_AUTH_TOKEN`` set: token mode with that token on every
  node; unset: token auth off (only for a private network).

Runs ``ray start --block`` in place of this process, so the container's main process
is Ray's and exits when the node does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys


def free_port(host: str = "") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ray_start_argv(args: argparse.Namespace) -> list[str]:
    ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    argv = [
        ray,
        "start",
        "--block",
        "--disable-usage-stats",
        f"--object-store-memory={args.object_store_mb * 1024 * 1024}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--min-worker-port={args.min_worker_port}",
        f"--max-worker-port={args.max_worker_port}",
    ]
    if args.num_cpus is not None:
        argv.append(f"--num-cpus={args.num_cpus:g}")
    if args.node_ip:
        argv.append(f"--node-ip-address={args.node_ip}")
    if args.temp_dir:
        argv.append(f"--temp-dir={args.temp_dir}")
    if args.role == "head":
        argv += [
            "--head",
            f"--port={args.port}",
            f"--ray-client-server-port={args.client_port}",
            "--include-dashboard=false",
        ]
    else:
        if not args.address:
            raise SystemExit("ray_node worker: --address HOST:PORT (or RAY_HEAD_ADDRESS) needed")
        argv.append(f"--address={args.address}")
    return argv


def ray_env(environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"  # multi-node on; see actors/fleet.py
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray gives a node 10 s to register; a busy small machine (or CI) needs longer.
    env.setdefault("RAY_raylet_start_wait_time_s", "120")
    env["RAY_AUTH_MODE"] = "token" if env.get("RAY_AUTH_TOKEN") else "disabled"
    return env


def main(argv: list[str] | None = None) -> int:
    e = os.environ
    p = argparse.ArgumentParser(prog="python -m deploy.ray_node", description=__doc__)
    p.add_argument(
        "role",
        choices=("head", "worker", "health"),
        help="start a head or a worker node; 'health' checks the head's GCS (healthchecks)",
    )
    p.add_argument("--address", default=e.get("RAY_HEAD_ADDRESS"), help="worker: head host:port")
    p.add_argument("--port", type=int, default=int(e.get("RAY_HEAD_PORT", 6379)), help="head GCS")
    p.add_argument(
        "--client-port",
        type=int,
        default=int(e.get("RAY_CLIENT_PORT", 10001)),
        help="head: Ray Client port (ray://)",
    )
    p.add_argument(
        "--num-cpus",
        type=float,
        default=float(e["RAY_NUM_CPUS"]) if e.get("RAY_NUM_CPUS") else None,
        help="CPUs this node offers to actors (default: head 0, so actors go to workers; "
        "worker: what Ray detects)",
    )
    p.add_argument(
        "--node-ip",
        default=e.get("RAY_NODE_IP_ADDRESS"),
        help="address other nodes reach this one at (default: Ray's guess)",
    )
    p.add_argument(
        "--object-store-mb",
        type=int,
        default=int(e.get("RAY_OBJECT_STORE_MB", 128)),
        help="object store size; the fleet passes no data through it",
    )
    p.add_argument("--min-worker-port", type=int, default=int(e.get("RAY_MIN_WORKER_PORT", 10002)))
    p.add_argument("--max-worker-port", type=int, default=int(e.get("RAY_MAX_WORKER_PORT", 19999)))
    p.add_argument("--temp-dir", default=e.get("RAY_TEMP_DIR"), help="Ray's session root")
    p.add_argument("--dry-run", action="store_true", help="print the ray start command only")
    args = p.parse_args(argv)
    if args.role == "health":
        host = args.node_ip or "127.0.0.1"
        ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
        check = [ray, "health-check", f"--address={host}:{args.port}"]
        return subprocess.run(check, env=ray_env(dict(os.environ)), timeout=60).returncode
    if args.num_cpus is None and args.role == "head":
        args.num_cpus = 0.0
    if args.num_cpus is not None and args.num_cpus < 0:
        p.error(f"--num-cpus: must be >= 0, got {args.num_cpus}")
    cmd = ray_start_argv(args)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    os.execve(cmd[0], cmd, ray_env(dict(os.environ)))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
