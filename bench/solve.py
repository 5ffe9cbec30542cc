"""Time to solve CartPole-v1: our stack (`dqn train` defaults) and Stable-Baselines3 DQN
(rl-baselines3-zoo tuned hyperparameters) side by side, over the same seeds.

    .venv/bin/python bench/solve.py [--seeds 1 2 3] [--sides ours sb3] [--max-seconds 300]
        [--sb3-max-env-steps 500000] [-- extra dqn train flags]

Runs one after another, never at once (each run gets the whole machine), alternating
sides seed by seed: ours seed 1, SB3 seed 1, ours seed 2, ... Both count seconds from
their process's start to the greedy evaluation (same evaluator, same number of
episodes) whose mean reaches the threshold, and the env steps at that point. Prints a
table per side, the medians and the ratio of the medians (ours / SB3); an unsolved run
counts as slower than any solved one. Writes bench/results/solve.json. SB3 needs the
`bench` extra: ``.venv/bin/pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import print_table, write_json  # noqa: E402

KEYS = (
    "solved",
    "stop_reason",
    "seconds_to_solve",
    "env_steps_to_solve",
    "updates_to_solve",
    "eval_mean",
    "env_steps",
    "wall_seconds",
    "peak_rss_mb",
)
TARGET = 0.5  # our median / SB3's median


def run_ours(seed: int, run_dir: Path, args) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "deploy.cli",
        "train",
        "--env",
        args.env,
        "--seed",
        str(seed),
        "--run-dir",
        str(run_dir),
        "--max-seconds",
        str(args.max_seconds),
        "--eval.episodes",
        str(args.eval_episodes),
        "--log-level",
        "WARNING",
        *args.extra,
    ]
    for attempt in (1, 2):  # a run that could not start (e.g. Ray timed out) is retried once
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
        summary = run_dir / "summary.json"
        if summary.exists():
            return json.loads(summary.read_text())
        print(f"ours seed {seed}: no summary (exit {proc.returncode}), attempt {attempt}")
    return {"solved": False, "stop_reason": f"failed (exit {proc.returncode})"}


def run_sb3(seed: int, out: Path, args) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "sb3_solve.py"),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--env",
        args.env,
        "--max-seconds",
        str(args.max_seconds),
        "--max-env-steps",
        str(args.sb3_max_env_steps),
        "--eval-every",
        str(args.sb3_eval_every),
        "--eval-episodes",
        str(args.eval_episodes),
    ]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def _median(rows: list[dict], key: str) -> float | None:
    """Median with unsolved runs as +inf; None when the median run did not solve."""
    values = [r[key] if r["solved"] else math.inf for r in rows]
    m = statistics.median(values) if values else math.inf
    return None if math.isinf(m) else float(m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sides", nargs="+", default=["ours", "sb3"], choices=["ours", "sb3"])
    parser.add_argument("--max-seconds", type=float, default=300, help="budget of one run")
    parser.add_argument("--sb3-max-env-steps", type=int, default=500_000)
    parser.add_argument(
        "--sb3-eval-every", type=int, default=1024, help="SB3: env steps between evaluations"
    )
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("extra", nargs="*", help="more `dqn train` flags (after --)")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {side: [] for side in args.sides}
    with tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
        for seed in args.seeds:
            for side in args.sides:
                if side == "ours":
                    s = run_ours(seed, Path(tmp) / f"ours{seed}", args)
                else:
                    s = run_sb3(seed, Path(tmp) / f"sb3-{seed}.json", args)
                row = {"seed": seed, **{k: s.get(k) for k in KEYS}}
                runs[side].append(row)
                print(
                    f"{side} seed {seed}: solved={row['solved']} ({row['stop_reason']}) "
                    f"seconds_to_solve={row['seconds_to_solve']} "
                    f"env_steps_to_solve={row['env_steps_to_solve']}",
                    flush=True,
                )
    result: dict = {"env": args.env, "seeds": args.seeds, "eval_episodes": args.eval_episodes}
    for side, rows in runs.items():
        print_table(
            f"{side}: time to solve {args.env}",
            [
                "seed",
                "solved",
                "s_to_solve",
                "steps_to_solve",
                "updates",
                "eval",
                "steps",
                "wall s",
            ],
            [
                [
                    r["seed"],
                    str(r["solved"]),
                    r["seconds_to_solve"],
                    r["env_steps_to_solve"],
                    r["updates_to_solve"],
                    r["eval_mean"],
                    r["env_steps"],
                    r["wall_seconds"],
                ]
                for r in rows
            ],
        )
        result[side] = {
            "runs": rows,
            "solved_runs": sum(bool(r["solved"]) for r in rows),
            "median_seconds_to_solve": _median(rows, "seconds_to_solve"),
            "median_env_steps_to_solve": _median(rows, "env_steps_to_solve"),
        }
    for side in args.sides:
        r = result[side]
        m, steps = r["median_seconds_to_solve"], r["median_env_steps_to_solve"]
        print(
            f"{side}: {r['solved_runs']}/{len(args.seeds)} solved; median seconds_to_solve "
            + (f"{m:.1f}, median env_steps_to_solve {steps:,.0f}" if m else "unsolved")
        )
    if {"ours", "sb3"} <= set(args.sides):
        ours, sb3 = result["ours"], result["sb3"]
        a, b = ours["median_seconds_to_solve"], sb3["median_seconds_to_solve"]
        if a is not None and b is not None:
            result["ratio_median_seconds"] = a / b
            result["ratio_median_env_steps"] = (
                ours["median_env_steps_to_solve"] / sb3["median_env_steps_to_solve"]
            )
            met = a / b <= TARGET
            result["target"] = {"what": "ours/SB3 median seconds", "max": TARGET, "met": met}
            print(
                f"ratio of medians ours/SB3: {a / b:.2f} in seconds (target <= {TARGET:g}: "
                f"{'met' if met else 'MISSED'}), {result['ratio_median_env_steps']:.2f} in "
                "env steps"
            )
        elif a is not None:
            # SB3's median run did not solve within the budget: its median is above it,
            # so the ratio is below ours / budget.
            bound = a / args.max_seconds
            result["ratio_median_seconds_upper_bound"] = bound
            result["target"] = {
                "what": "ours/SB3 median seconds (SB3 unsolved: upper bound)",
                "max": TARGET,
                "met": bound <= TARGET,
            }
            print(
                f"ratio of medians ours/SB3: < {bound:.2f} (SB3's median run did not solve "
                f"within {args.max_seconds:g} s; target <= {TARGET:g}: "
                f"{'met' if bound <= TARGET else 'undecided'})"
            )
        else:
            print("ratio of medians: undefined (our median run did not solve)")
    write_json("solve", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
