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
import sys
from typing import Any

from dqn import config as config_mod
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


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON config file ({section: {field: value}})",
    )
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
    return config_mod.load(args.config, _overrides(args))


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
    p.add_argument("--replay-address", required=True, help="host:port of the replay server")
    p.add_argument(
        "--resume", action="store_true", help="continue from RUN_DIR/checkpoints/learner.pt"
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
        help="run the actor fleet (Ray actors or plain processes)",
        description="Run --actors.num-actors actors that push to the replay "
        "server and watch the learner's weights.",
    )
    p.add_argument("--replay-address", required=True, help="host:port of the replay server")
    p.add_argument("--weights-address", required=True, help="host:port of the weight service")
    p.add_argument(
        "--ray-address",
        default="local",
        help="Ray cluster to join ('local' starts a private one, 'auto' joins the running one)",
    )
    _add_config_flags(p)

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
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command == "evaluate":
            return _evaluate(args)
        config = load_config(args)
        if args.command == "train":
            from deploy.local import train

            return train(config, resume=args.resume, log_level=args.log_level)
        if args.command == "replay-server":
            from replay_server.server import serve

            return serve(config, args.ready_file, security_mod.load(config.security))
        if args.command == "learner":
            from learner.main import serve

            return serve(
                config,
                args.replay_address,
                resume=args.resume,
                ready_file=args.ready_file,
                start_time=args.start_time,
                security=security_mod.load(config.security),
            )
        if args.command == "actors":
            from deploy.fleet_driver import run_fleet

            return run_fleet(
                config,
                args.replay_address,
                args.weights_address,
                args.ray_address,
                security_mod.load(config.security),
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
