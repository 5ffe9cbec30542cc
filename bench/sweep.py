"""A settings sweep: `dqn train` with each named set of flags over the same seeds.

    .venv/bin/python bench/sweep.py --seeds 1 2 3 \
        --setting "defaults=" \
        --setting "spi16=--replay.samples-per-insert 16 --replay.spi-tolerance 4096" \
        [-- flags for every run, e.g. --env Acrobot-v1]

Runs one at a time (each gets the whole machine), setting by setting within a seed, so
drift of a shared machine falls on every setting alike. For each setting it prints
every seed's seconds and env steps to solve (from process start, evaluation included),
the replay ratio the run kept (sampled / inserted over the run), and the medians and
the spread (max / min env steps; an unsolved run makes it infinite). Writes the table
as JSON to ``--out`` (default ``bench/results/sweep.json``).
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

from bench.compare_runs import run_once  # noqa: E402


def held(run_dir: Path, episodes: int) -> float | None:
    """Mean of ``dqn evaluate RUN_DIR --episodes N`` (other seeds than the run's): does
    the solved policy hold?"""
    if episodes <= 0:
        return None
    cmd = [sys.executable, "-m", "deploy.cli", "evaluate", str(run_dir), "--json"]
    out = subprocess.run(
        [*cmd, "--episodes", str(episodes)], cwd=ROOT, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["mean"] if out.returncode == 0 else None


def one_run(flags: list[str], seed: int, run_dir: Path, evaluate: int = 0) -> dict:
    s = run_once(ROOT, ["--seed", str(seed), *flags], run_dir)["summary"]
    return {
        "evaluate_mean": held(run_dir, evaluate),
        "seed": seed,
        "solved": s["solved"],
        "seconds_to_solve": s["seconds_to_solve"],
        "env_steps_to_solve": s["env_steps_to_solve"],
        "updates_to_solve": s["updates_to_solve"],
        "samples_per_insert": s.get("samples_per_insert"),
        "wall_seconds": s["wall_seconds"],
    }


def summarize(runs: list[dict]) -> dict:
    inf = math.inf
    steps = [r["env_steps_to_solve"] if r["solved"] else inf for r in runs]
    secs = [r["seconds_to_solve"] if r["solved"] else inf for r in runs]
    return {
        "solved": sum(r["solved"] for r in runs),
        "median_seconds": statistics.median(secs),
        "median_env_steps": statistics.median(steps),
        "spread": max(steps) / min(steps) if min(steps) > 0 else inf,
        "samples_per_insert": statistics.median(r["samples_per_insert"] or 0.0 for r in runs),
        "evaluate_min": min((r["evaluate_mean"] for r in runs), default=None, key=_none_low),
    }


def _none_low(x):
    return -math.inf if x is None else x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--setting", action="append", required=True, metavar="NAME=FLAGS")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep.json"))
    p.add_argument(
        "--evaluate",
        type=int,
        default=0,
        metavar="N",
        help="after each run, `dqn evaluate --episodes N` its policy (0 = no)",
    )
    p.add_argument("common", nargs="*", help="after --: flags for every run")
    args = p.parse_args(argv)
    settings = {name: flags.split() for name, flags in (s.split("=", 1) for s in args.setting)}
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, flags in settings.items():
                run_dir = Path(tmp) / f"{name}-{seed}"
                r = one_run([*args.common, *flags], seed, run_dir, args.evaluate)
                runs[name].append(r)
                print(
                    f"{name} seed {seed}: solved={r['solved']} {r['seconds_to_solve']} s, "
                    f"{r['env_steps_to_solve']} env steps, spi {r['samples_per_insert']:.1f}"
                    + (f", evaluate {r['evaluate_mean']}" if args.evaluate else ""),
                    flush=True,
                )
    table = {name: {"runs": rs, **summarize(rs)} for name, rs in runs.items()}
    print(f"\n{'setting':>16} solved  median s  median env steps  spread  spi  held (min)")
    for name, t in table.items():
        print(
            f"{name:>16} {t['solved']:>3}/{len(args.seeds)} {t['median_seconds']:9.1f} "
            f"{t['median_env_steps']:17,.0f} {t['spread']:7.2f} {t['samples_per_insert']:4.1f}"
            f"  {t['evaluate_min']}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"common": args.common, "settings": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
