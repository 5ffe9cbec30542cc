"""The ``dqn`` command: train, replay-server, learner, actors, evaluate.

Every subcommand takes the whole configuration as ``--section.field VALUE`` flags
(listed by ``--help`` with their one-line explanations and defaults), a
``--config FILE`` (TOML or JSON) and ``DQN_SECTION__FIELD`` environment variables;
flags win over the environment, which wins over the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any

from deploy.builder import Builder
from dqn import config as config_mod
from dqn import presets
from dqn import security as security_mod

# Short spellings for the flags people type most.
ALIASES = {
    "env": ("env", "id"),
    "seed": ("run", "seed"),
    "run-dir": ("run", "dir"),
    "max-seconds": ("run", "max_seconds"),
    "max-env-steps": ("run", "max_env_steps"),
    "max-updates": ("run", "max_updates"),
    "num-actors": ("actors", "num_actors"),
    "device": ("learner", "device"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _address_flag(parser: argparse.ArgumentParser, flag: str, env: str, help: str) -> None:
    """An address flag that falls back to an environment variable (compose sets those)."""
    default = os.environ.get(env) or None
    parser.add_argument(flag, default=default, required=default is None, help=f"{help} (env {env})")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON config file ({section: {field: value}})",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=tuple(presets.PRESETS),
        help="named settings applied first; the file, environment and flags override "
        "them (see 'presets' at the end)",
    )
    parser.epilog = presets.describe()
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level",
    )
    short = parser.add_argument_group("common settings (short forms of the flags below)")
    for alias, (section, name) in ALIASES.items():
        short.add_argument(
            f"--{alias}",
            dest=f"cfg__{section}__{name}",
            default=argparse.SUPPRESS,
            metavar="V",
            help=f"= --{section}.{name}",
        )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, f, help_text in config_mod.iter_fields():
        group = groups.get(section) or parser.add_argument_group(f"[{section}] settings")
        groups[section] = group
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = json.dumps(f.default_factory())
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        group.add_argument(
            f"--{section}.{f.name.replace('_', '-')}",
            f"--{section}.{f.name}",
            dest=f"cfg__{section}__{f.name}",
            default=argparse.SUPPRESS,
            metavar="V",
            help=f"{help_text} (default: {default})",
        )


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith("cfg__"):
            _, section, name = key.split("__", 2)
            out.setdefault(section, {})[name] = value
    return out


def load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config, _overrides(args), preset=args.preset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqn",
        description="Distributed DQN: Ray actors, a gRPC replay server, a learner.",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        help="train on one machine: replay server, learner and Ray actors, all local",
        description="Start the replay server and the learner as processes on free loopback "
        "ports, a private local Ray with the actors, and train until the greedy evaluation "
        "reaches the env's threshold or a budget is spent. Leaves a run directory with "
        "config.json, metrics.jsonl, tb/, checkpoints/, learning_curve.png, policy.pt and "
        "summary.json.",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the learner from RUN_DIR/checkpoints/learner.pt",
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "replay-server",
        formatter_class=_HelpFormatter,
        help="run the gRPC replay server (until SIGTERM)",
        description="Serve dqn.v1.ReplayService and gRPC health on --replay.host:--replay.port.",
    )
    p.add_argument("--ready-file", default=None, help="write {address, port} here once serving")
    _add_config_flags(p)

    p = sub.add_parser(
        "learner",
        formatter_class=_HelpFormatter,
        help="run the learner and its weight service",
        description="Sample from the replay server, train, publish weights on "
        "--learner.host:--learner.port, evaluate and checkpoint.",
    )
    _address_flag(p, "--replay-address", "DQN_REPLAY_ADDRESS", "host:port of the replay server")
    p.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        default="no",
        choices=("yes", "auto", "no"),
        help="continue from RUN_DIR/checkpoints/learner.pt ('auto': only if it exists, "
        "as a restarted cluster learner wants)",
    )
    p.add_argument("--ready-file", default=None, help="write {address, port} here once serving")
    p.add_argument(
        "--start-time",
        type=float,
        default=None,
        help="epoch seconds that count as the start of the run (default: now)",
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "actors",
        formatter_class=_HelpFormatter,
        help="run the actor fleet (Ray actors or plain processes); scale or inspect it",
        description="Run --num-actors actors (or 'auto': one per --actors.cpus-per-actor CPUs "
        "of the cluster, following workers as they join and leave) that push to the replay "
        "server and watch the learner's weights. The fleet serves a control service on "
        "--actors.control-host:--actors.control-port; while it runs:\n\n"
        "  dqn actors scale N|auto --fleet-address HOST:PORT   resize the running fleet\n"
        "  dqn actors status --fleet-address HOST:PORT         print its state",
    )
    _address_flag(p, "--replay-address", "DQN_REPLAY_ADDRESS", "host:port of the replay server")
    _address_flag(p, "--weights-address", "DQN_WEIGHTS_ADDRESS", "host:port of the weight service")
    p.add_argument(
        "--ray-address",
        default=os.environ.get("DQN_RAY_ADDRESS") or "local",
        help="Ray cluster to join: 'local' starts a private one, HOST:PORT joins the nodes "
        "started with `ray start`, ray://HOST:10001 goes through Ray Client",
    )
    p.add_argument("--ready-file", default=None, help="write {address, port} once serving")
    _add_config_flags(p)

    p = sub.add_parser(
        "evaluator",
        formatter_class=_HelpFormatter,
        help="run the evaluator actor: greedy evaluations of the learner's newest weights",
        description="Watch the learner's weights and play --eval.episodes greedy episodes "
        "of a version when --eval.schedule says so (every --eval.every-versions versions, "
        "every --eval.every-seconds seconds, or continuously); report each evaluation to "
        "the learner, which decides stop-when-solved from them. `dqn train` and `dqn "
        "actors` start one themselves; this runs it as a service of its own.",
    )
    _address_flag(p, "--weights-address", "DQN_WEIGHTS_ADDRESS", "host:port of the learner")
    _add_config_flags(p)

    p = sub.add_parser(
        "env-spec",
        formatter_class=_HelpFormatter,
        help="build the env once and print its spec (for a cluster's learner and replay)",
        description="Print the env's spec (observation shape and dtype, actions, reward "
        "threshold) as the settings a learner or replay server without the env needs: "
        "environment variables (default), flags (--format flags) or TOML (--format toml).",
    )
    p.add_argument("--format", default="env", choices=("env", "flags", "toml", "json"))
    _add_config_flags(p)

    p = sub.add_parser(
        "health",
        formatter_class=_HelpFormatter,
        help="probe a gRPC service's health (exit 0 when SERVING); for container healthchecks",
    )
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--service", default="", help="service name to ask about ('' = the server)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")

    p = sub.add_parser(
        "evaluate",
        formatter_class=_HelpFormatter,
        help="run a run directory's policy.pt greedily and print mean ± std",
        description="Run RUN_DIR/policy.pt greedily on --episodes envs and print the mean "
        "return; with --video FILE also play --video-episodes episodes rendered to a GIF "
        "or MP4 (chosen by FILE's suffix).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds policy.pt)")
    p.add_argument("--episodes", type=int, default=20, help="episodes to run")
    p.add_argument("--seed", type=int, default=12345, help="seed of the evaluation envs")
    p.add_argument("--env", default=None, help="env id (default: the run's config.json)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--video", metavar="FILE", default=None, help="write a .gif or .mp4 here")
    p.add_argument("--video-episodes", type=int, default=1, help="episodes in the video")
    p.add_argument(
        "--video-max-frames", type=int, default=1000, help="stop the video after this many frames"
    )
    p.add_argument("--video-fps", type=float, default=30.0, help="frames per second of the video")
    return parser


def _with_spec(config: config_mod.Config, command: str) -> config_mod.Config:
    """The env spec a learner or replay server needs: the config's, or (when it has none)
    resolved by building the env once, which needs gymnasium and the env's code here."""
    if config.env.has_spec:
        return config
    logging.getLogger("dqn").info(
        "%s: no env spec in the config; building %s once to read it (set env.obs_shape, "
        "env.obs_dtype and env.n_actions to skip this; `dqn env-spec` prints them)",
        command,
        config.env.id,
    )
    try:
        from dqn.envs import with_spec
    except ImportError as exc:
        config.env.require_spec()  # says which setting is missing
        raise config_mod.ConfigError(f"env.id: cannot build the env here ({exc})") from None
    return with_spec(config)


def _env_spec(config: config_mod.Config, fmt: str) -> int:
    from dqn.envs import with_spec

    env = with_spec(config).env
    fields = {
        "obs_shape": ",".join(map(str, env.obs_shape)),
        "obs_dtype": env.obs_dtype,
        "n_actions": env.n_actions,
        "solve_threshold": env.solve_threshold,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if fmt == "json":
        print(json.dumps({"env": {**fields, "obs_shape": list(env.obs_shape)}}))
    elif fmt == "toml":
        print("[env]")
        for k, v in fields.items():
            print(f"{k} = {json.dumps(list(env.obs_shape) if k == 'obs_shape' else v)}")
    else:
        for k, v in fields.items():
            print(
                f"--env.{k.replace('_', '-')} {v}"
                if fmt == "flags"
                else f"DQN_ENV__{k.upper()}={v}"
            )
    return 0


def _fleet_control(argv: list[str]) -> int:
    """``dqn actors scale N|auto`` and ``dqn actors status``."""
    action = argv[0]
    p = argparse.ArgumentParser(
        prog=f"dqn actors {action}",
        description="resize a running fleet" if action == "scale" else "print a fleet's state",
    )
    if action == "scale":
        p.add_argument("size", metavar="N|auto", help="actor count, or 'auto' to follow CPUs")
    _address_flag(p, "--fleet-address", "DQN_FLEET_ADDRESS", "host:port of `dqn actors`' control")
    p.add_argument("--token-file", default=None, help="file with the RPC token")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    args = p.parse_args(argv[1:])
    actors, auto = None, False
    if action == "scale":
        if args.size.lower() == "auto":
            auto = True
        else:
            try:
                actors = int(args.size)
            except ValueError:
                p.error(f"N|auto: expected a count or 'auto', got {args.size!r}")
    import grpc
    from google.protobuf import json_format

    from deploy.fleet_driver import control

    try:
        sec = security_mod.load(config_mod.SecurityConfig(token_file=args.token_file))
        status = control(args.fleet_address, actors, auto, sec)
    except grpc.RpcError as exc:
        print(f"dqn actors {action}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
    except security_mod.SecurityError as exc:
        print(f"dqn actors {action}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json_format.MessageToJson(status, always_print_fields_with_no_presence=True))
    else:
        target = f"auto -> {status.target}" if status.auto else str(status.target)
        print(
            f"fleet ({status.runner}): {status.alive}/{status.actors} actors alive, target "
            f"{target}, {status.cluster_cpus:g} CPUs"
        )
        for a in status.actor:
            print(
                f"  actor {a.actor_id}: {'alive' if a.alive else 'DOWN'} pid {a.pid} {a.node[:12]}"
            )
    return 0


def _health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from dqn import rpc

    try:
        sec = security_mod.load(config_mod.SecurityConfig())
    except security_mod.SecurityError:
        sec = None
    with rpc.channel(args.address, security=sec) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.address}: {name}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _evaluate(args: argparse.Namespace) -> int:
    from deploy.evaluate import evaluate_run
    from deploy.video import VideoError, check_video_path, record_video

    try:
        if args.video:
            check_video_path(args.video)  # refuse a bad path before playing anything
        result = evaluate_run(args.run_dir, args.episodes, args.seed, args.env)
        if not args.json:
            print(
                f"{result['env_id']}: {result['mean']:.1f} ± {result['std']:.1f} over "
                f"{result['episodes']} greedy episodes",
                flush=True,
            )
        if args.video:
            video = record_video(
                args.run_dir,
                args.video,
                episodes=args.video_episodes,
                max_frames=args.video_max_frames,
                fps=args.video_fps,
                seed=args.seed,
                env_id=args.env,
            )
            result["video"] = video
            if not args.json:
                print(
                    f"wrote {video['path']}: {video['frames']} frames {video['width']}x"
                    f"{video['height']} at {video['fps']:g} fps, {video['episodes']} "
                    f"episode(s), returns {', '.join(f'{r:g}' for r in video['returns'])}"
                )
    except VideoError as exc:
        print(f"dqn evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "actors" and argv[1] in ("scale", "status"):
        return _fleet_control(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "health":
            return _health(args)
        config = load_config(args)
        if args.command == "env-spec":
            return _env_spec(config, args.format)
        if args.command == "evaluator":
            return Builder(config).run_evaluator(args.weights_address)
        if args.command in ("replay-server", "learner"):
            config = _with_spec(config, args.command)
        if args.command == "train":
            from deploy.local import train

            return train(config, resume=args.resume, log_level=args.log_level)
        if args.command == "replay-server":
            return Builder(config).serve_replay(args.ready_file)
        if args.command == "learner":
            return Builder(config).serve_learner(
                args.replay_address,
                resume={"yes": True, "auto": "auto", "no": False}[args.resume],
                ready_file=args.ready_file,
                start_time=args.start_time,
            )
        if args.command == "actors":
            return Builder(config).run_fleet(
                args.replay_address,
                args.weights_address,
                args.ray_address,
                ready_file=args.ready_file,
            )
    except (config_mod.ConfigError, security_mod.SecurityError) as exc:
        print(f"dqn {args.command}: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"dqn {args.command}: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
