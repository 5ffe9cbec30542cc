"""The ``dqn`` command: train, replay-server, learner, actors, evaluate.

Every subcommand that runs a part takes the whole configuration as
``--section.field-name VALUE`` flags (one per field of :mod:`dqn.config`, listed by
``--help`` in a group per section with a typed metavar and the default), a
``--config FILE`` (TOML or JSON) and ``DQN_SECTION__FIELD`` environment variables;
flags win over the environment, which wins over the file, which wins over
``--preset``. Booleans are ``--x`` / ``--no-x`` (``--x true|false`` works too); the
flags people type most have a short spelling too (``--seed`` is ``--run.seed``).

The flags only collect text: :mod:`dqn.config` converts and checks it, and a bad
setting ends the command with exit code 2 and one line on stderr that names the
setting as it was given (the flag as typed, or the environment variable), before
anything is started. No abbreviation of a flag is accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
import sys
import textwrap
import types
import typing
from typing import Any

from deploy.builder import Builder
from dqn import config as config_mod
from dqn import presets
from dqn import security as security_mod

# Short spellings for the flags people type most: one option with two spellings.
ALIASES = {field: name.replace("_", "-") for name, field in config_mod.SHORT_OPTIONS.items()}
FLAGS_ATTR = "dqn_flags"  # namespace attribute: dest -> the spelling that set it


def version() -> str:
    """The installed distribution's version, else (a source tree) ``dqn.__version__``."""
    from importlib import metadata

    try:
        return metadata.version("distributed-dqn")
    except metadata.PackageNotFoundError:
        from dqn import __version__

        return __version__


class _FieldFlag(argparse.Action):
    """A config field's flag. It keeps the text for :mod:`dqn.config` to convert and
    check (so every bad value gets the same one-line error as from a file or the
    environment) and remembers which spelling set it, for that error."""

    dqn_field = True

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        flags = getattr(namespace, FLAGS_ATTR, None)
        if flags is None:
            flags = {}
            setattr(namespace, FLAGS_ATTR, flags)
        flags[self.dest] = option_string


class _BoolFlag(_FieldFlag):
    """``--x`` (true) and ``--no-x`` (false); ``--x VALUE`` also takes true/false/yes/no/
    1/0/on/off, as config files and environment variables do."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string.startswith("--no-"):
            if values is not None:
                raise argparse.ArgumentError(self, f"{option_string} takes no value")
            values = "false"
        elif values is None:
            values = "true"
        super().__call__(parser, namespace, values, option_string)


class _HelpFormatter(argparse.HelpFormatter):
    """Each option once: ``--seed, --run.seed INT`` (the metavar once, after all the
    spellings), ``--x, --no-x`` for a boolean; the usage line sums up the config
    fields as ``[--SECTION.FIELD VALUE ...]`` instead of listing a hundred of them."""

    def _fill_text(self, text, width, indent):
        """Descriptions and epilogs: paragraphs are wrapped, indented lines kept."""
        return "\n\n".join(
            para
            if para.startswith(" ") or "\n " in para
            else textwrap.fill(
                " ".join(para.split()), width, initial_indent=indent, break_on_hyphens=False
            )
            for para in text.split("\n\n")
        )

    def _split_lines(self, text, width):
        """Help texts wrap at spaces only: no flag or name is split at its hyphen."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        if isinstance(action, _BoolFlag):
            return ", ".join(action.option_strings)
        args = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {args}"

    def _format_usage(self, usage, actions, groups, prefix):
        shown = [a for a in actions if not getattr(a, "dqn_field", False)]
        if len(shown) < len(actions):
            shown.append(argparse.Action(["--SECTION.FIELD"], "fields", metavar="VALUE ..."))
        return super()._format_usage(usage, shown, groups, prefix)


def _address_flag(parser: argparse.ArgumentParser, flag: str, env: str, help: str) -> None:
    """An address flag that falls back to an environment variable (compose sets those)."""
    default = os.environ.get(env) or None
    parser.add_argument(
        flag,
        default=default,
        required=default is None,
        metavar="HOST:PORT",
        help=f"{help} (env {env})",
    )


def _metavar(hint: Any, meta: typing.Mapping[str, Any]) -> str:
    """INT, FLOAT, STR, {a,b} (choices), INT,INT (tuples), JSON (objects), or the
    field's own (PATH)."""
    if "metavar" in meta:
        return meta["metavar"]
    if "choices" in meta:
        return "{" + ",".join(map(str, meta["choices"])) + "}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is dict or typing.get_origin(hint) is dict:
        return "JSON"
    if typing.get_origin(hint) is tuple:
        item = _metavar(typing.get_args(hint)[0], {})
        return f"{item},{item}"
    return {int: "INT", float: "FLOAT", str: "STR"}.get(hint, "VALUE")


def _show_default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None or value == "" or value == ():
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML or JSON file of settings: [section] tables of field = value",
    )
    parser.add_argument(
        "--preset",
        default=None,
        choices=tuple(presets.PRESETS),
        metavar="NAME",
        help=f"named settings applied first ({', '.join(presets.PRESETS)}; see 'presets' "
        "at the end); the file, environment and flags override them",
    )
    parser.epilog = (
        "Every [section] option can also be set in the --config file ([section] table, "
        "field = value) or as an environment variable DQN_SECTION__FIELD; flags win "
        "over the environment, which wins over the file, which wins over --preset.\n\n"
        + presets.describe()
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        metavar="LEVEL",
        help="logging level: DEBUG, INFO, WARNING or ERROR (default: INFO)",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    hints = {name: typing.get_type_hints(cls) for name, cls in config_mod.SECTIONS.items()}
    for section, f, help_text in config_mod.iter_fields():
        group = groups.get(section) or parser.add_argument_group(f"[{section}] settings")
        groups[section] = group
        hint = hints[section][f.name]
        action = _BoolFlag if hint is bool else _FieldFlag
        dashed = f.name.replace("_", "-")
        spellings = [f"--{section}.{dashed}"]
        if (section, f.name) in ALIASES:
            spellings.insert(0, f"--{ALIASES[section, f.name]}")
        if hint is bool:
            spellings.append(f"--no-{section}.{dashed}")
        if "default" not in help_text:  # some say what the default means themselves
            help_text = f"{help_text} (default: {_show_default(f)})"
        dest = f"cfg__{section}__{f.name}"
        group.add_argument(
            *spellings,
            action=action,
            dest=dest,
            default=argparse.SUPPRESS,
            help=help_text,
            **({} if hint is bool else {"metavar": _metavar(hint, f.metadata)}),
        )
        if dashed != f.name:  # the field's own spelling works too, without a second line
            hidden = [f"--{section}.{f.name}"] + (
                [f"--no-{section}.{f.name}"] if hint is bool else []
            )
            group.add_argument(
                *hidden, action=action, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS
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


_SETTING = re.compile(r"(?P<section>[a-z]+)\.(?P<field>[a-z0-9_]+): ")


def setting_error(message: str, args: argparse.Namespace) -> str:
    """A :class:`~dqn.config.ConfigError`'s message (``section.field: ...``) naming the
    setting as the user gave it: the flag as typed (``--max-seconds: ...``), else the
    environment variable (``DQN_RUN__MAX_SECONDS: ...``); ``config file F: ...`` names
    ``--config``. A value from the config file, a preset or the defaults keeps the
    field's dotted name, which is how the file spells it."""
    config_file = getattr(args, "config", None)
    if config_file and message.startswith(f"config file {config_file}: "):
        return f"--config: {message[len('config file ') :]}"
    m = _SETTING.match(message)
    if m is None:
        return message
    section, field, rest = m["section"], m["field"], message[m.end() :]
    flag = (getattr(args, FLAGS_ATTR, None) or {}).get(f"cfg__{section}__{field}")
    if flag:
        return f"{flag}: {rest}"
    var = f"{config_mod.ENV_PREFIX}{section.upper()}__{field.upper()}"
    if var in os.environ:
        return f"{var}: {rest}"
    return message


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """argparse's message for unknown arguments, with the closest real flag if any."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    known = [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], known, n=1, cutoff=0.8)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dqn",
        description="Distributed DQN: Ray actors, a gRPC replay server, a learner.",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.dqn_commands = sub.choices  # name -> subparser, for errors in its usage

    p = sub.add_parser(
        "train",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        help="train on one machine: replay server, learner and Ray actors, all local",
        description="Start the replay server and the learner as processes on free loopback "
        "ports, a private local Ray with the actors, and train until the greedy evaluation "
        "reaches the env's threshold or a budget is spent. Leaves a run directory with "
        "config.json, metrics.jsonl, tb/, checkpoints/, learning_curve.png, policy.safetensors, "
        "best_policy.safetensors and "
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
        allow_abbrev=False,
        help="run the gRPC replay server (until SIGTERM)",
        description="Serve dqn.v1.ReplayService and gRPC health on --replay.host:--replay.port.",
    )
    p.add_argument(
        "--ready-file", metavar="PATH", default=None, help="write {address, port} here once serving"
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "learner",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        help="run the learner and its weight server",
        description="Sample from the replay server, train, publish weights on "
        "--learner.host:--learner.port, record the evaluator's reports and checkpoint.",
    )
    _address_flag(p, "--replay-address", "DQN_REPLAY_ADDRESS", "host:port of the replay server")
    p.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        default="no",
        choices=("yes", "auto", "no"),
        help="continue from RUN_DIR/checkpoints/learner.pt ('auto': only if it exists, "
        "as a restarted cluster learner wants; default: no, bare --resume: yes)",
    )
    p.add_argument(
        "--ready-file", metavar="PATH", default=None, help="write {address, port} here once serving"
    )
    p.add_argument(
        "--start-time",
        metavar="FLOAT",
        type=float,
        default=None,
        help="epoch seconds that count as the start of the run (default: now)",
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "actors",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        help="run the actor fleet (Ray actors or plain processes); scale or inspect it",
        description="Run --num-actors actors (or 'auto': one per --actors.cpus-per-actor CPUs "
        "of the cluster, following workers as they join and leave) that push to the replay "
        "server and watch the learner's weights. The fleet serves a control service on "
        "--actors.control-host:--actors.control-port; while it runs:\n\n"
        "  dqn actors scale N|auto --fleet-address HOST:PORT   resize the running fleet\n"
        "  dqn actors status --fleet-address HOST:PORT         print its state",
    )
    _address_flag(p, "--replay-address", "DQN_REPLAY_ADDRESS", "host:port of the replay server")
    _address_flag(p, "--weights-address", "DQN_WEIGHTS_ADDRESS", "host:port of the weight server")
    p.add_argument(
        "--ray-address",
        default=os.environ.get("DQN_RAY_ADDRESS") or "local",
        metavar="ADDRESS",
        help="Ray cluster to join: 'local' starts a private one, HOST:PORT joins the nodes "
        "started with `ray start`, ray://HOST:10001 goes through Ray Client (env "
        "DQN_RAY_ADDRESS; default: local)",
    )
    p.add_argument(
        "--ready-file", metavar="PATH", default=None, help="write {address, port} once serving"
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "evaluator",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
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
        allow_abbrev=False,
        help="build the env once and print its spec (for a cluster's learner and replay)",
        description="Print the env's spec (observation shape and dtype, actions, reward "
        "threshold) as the settings a learner or replay server without the env needs: "
        "environment variables (default), flags (--format flags) or TOML (--format toml).",
    )
    p.add_argument(
        "--format",
        default="env",
        choices=("env", "flags", "toml", "json"),
        help="how to print the spec (default: env)",
    )
    _add_config_flags(p)

    p = sub.add_parser(
        "health",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        help="probe a gRPC service's health (exit 0 when SERVING); for container healthchecks",
    )
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument(
        "--service",
        metavar="STR",
        default="",
        help="service name to ask about (default: '', the server)",
    )
    p.add_argument(
        "--timeout",
        metavar="FLOAT",
        type=float,
        default=3.0,
        help="seconds to wait for an answer (default: 3)",
    )

    p = sub.add_parser(
        "evaluate",
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
        help="run a run directory's policy.safetensors greedily and print mean ± std",
        description="Run RUN_DIR/policy.safetensors greedily on --episodes envs and print the mean "
        "return; with --video FILE also play --video-episodes episodes rendered to a GIF "
        "or MP4 (chosen by FILE's suffix).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds policy.safetensors)")
    p.add_argument(
        "--episodes", metavar="INT", type=int, default=20, help="episodes to run (default: 20)"
    )
    p.add_argument(
        "--seed",
        metavar="INT",
        type=int,
        default=12345,
        help="seed of the evaluation envs (default: 12345)",
    )
    p.add_argument(
        "--env", metavar="STR", default=None, help="env id (default: the run's config.json)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--video", metavar="FILE", default=None, help="write a .gif or .mp4 here")
    p.add_argument(
        "--video-episodes",
        metavar="INT",
        type=int,
        default=1,
        help="episodes in the video (default: 1)",
    )
    p.add_argument(
        "--video-max-frames",
        metavar="INT",
        type=int,
        default=1000,
        help="stop the video after this many frames (default: 1000)",
    )
    p.add_argument(
        "--video-fps",
        metavar="FLOAT",
        type=float,
        default=30.0,
        help="frames per second of the video (default: 30)",
    )
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
        allow_abbrev=False,
        formatter_class=_HelpFormatter,
        description="resize a running fleet" if action == "scale" else "print a fleet's state",
    )
    if action == "scale":
        p.add_argument("size", metavar="N|auto", help="actor count, or 'auto' to follow CPUs")
    _address_flag(p, "--fleet-address", "DQN_FLEET_ADDRESS", "host:port of `dqn actors`' control")
    p.add_argument("--token-file", metavar="PATH", default=None, help="file with the RPC token")
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
    from dqn.policy_file import PolicyFileError

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
    except (VideoError, PolicyFileError) as exc:
        print(f"dqn evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The parsed command line; an unknown argument ends the command (exit 2) with the
    usage of the subcommand it was given to, not the top-level one."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = parser.dqn_commands.get(getattr(args, "command", None), parser)
        sub.error(_unrecognized(sub, extra))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) >= 2 and argv[0] == "actors" and argv[1] in ("scale", "status"):
        return _fleet_control(argv[1:])
    args = parse_args(argv)
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
        if args.command in ("actors", "evaluator") and config.env.factory:
            raise config_mod.ConfigError(
                "env.factory: a Python callable travels only with dqn.train on one "
                "machine; for a cluster, put the env in a module the images install and "
                "set env.id to 'module:factory'"
            )
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
        message = " ".join(str(exc).splitlines())  # one line, whatever the value held
        print(f"dqn {args.command}: {setting_error(message, args)}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"dqn {args.command}: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
