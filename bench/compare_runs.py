"""Before/after: the same `dqn train` run from two source trees, side by side.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/compare_runs.py --tree before=/tmp/before --tree after=. \
        --repeats 2 -- --max-seconds 40 --run.stop-when-solved false
    .venv/bin/python bench/compare_runs.py --tree a=. --tree b=. \
        --args "b=--eval.schedule seconds" -- --max-seconds 40

Runs alternate tree by tree (before, after, before, after, ...) so drift of a shared
machine falls on both alike, each with this interpreter and ``PYTHONPATH`` set to its
tree. From each run's ``metrics.jsonl`` it prints the learner's updates/s and the
fleet's env steps/s (mean over the progress records after the first
``--warmup-seconds``), and from ``summary.json`` the seconds and env steps to solve.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(tree: Path, args: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    cli = "deploy.cli" if (tree / "deploy" / "cli.py").exists() else "dqn.cli"  # older trees
    cmd = [sys.executable, "-m", cli, "train", "--run-dir", str(run_dir), *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open() if line.strip()]
    return {
        "wall": time.monotonic() - t0,
        "progress": [r for r in records if r["kind"] == "progress"],
        "summary": json.loads((run_dir / "summary.json").read_text()),
    }


def figures(result: dict, warmup: float) -> dict:
    progress = result["progress"]
    t0 = progress[0]["time"] if progress else 0.0
    steady = [r for r in progress if r["time"] - t0 >= warmup and not r.get("final")]
    steady = steady or progress
    s = result["summary"]
    return {
        "updates_per_s": statistics.mean(r["updates_per_s"] for r in steady),
        "env_steps_per_s": statistics.mean(r["env_steps_per_s"] for r in steady),
        "updates": s["updates"],
        "env_steps": s["env_steps"],
        "seconds_to_solve": s["seconds_to_solve"],
        "env_steps_to_solve": s["env_steps_to_solve"],
        "evaluator_cpu_share": s.get("evaluator_cpu_share"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tree", action="append", required=True, metavar="NAME=PATH")
    p.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="extra `dqn train` flags for one tree (the same path twice with different "
        "flags compares settings)",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup-seconds", type=float, default=5.0)
    p.add_argument("--out", default=None, help="write the figures here as JSON")
    p.add_argument("train_args", nargs="*", help="after --: flags for `dqn train`")
    args = p.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree)
    extra = {name: flags.split() for name, flags in (a.split("=", 1) for a in args.args)}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            for name, path in trees.items():
                run_dir = Path(tmp) / f"{name}-{k}"
                train_args = [*args.train_args, *extra.get(name, [])]
                f = figures(
                    run_once(Path(path).resolve(), train_args, run_dir), args.warmup_seconds
                )
                results[name].append(f)
                print(
                    f"{name} #{k + 1}: {f['updates_per_s']:7.1f} updates/s, "
                    f"{f['env_steps_per_s']:8.0f} env steps/s, solved at "
                    f"{f['seconds_to_solve']} s / {f['env_steps_to_solve']} env steps"
                    + (
                        f"; evaluator {f['evaluator_cpu_share']:.0%} of a core"
                        if f["evaluator_cpu_share"] is not None
                        else ""
                    ),
                    flush=True,
                )
    print("\nmedian over repeats:")
    for name, runs in results.items():
        med = {
            key: statistics.median(r[key] for r in runs)
            for key in ("updates_per_s", "env_steps_per_s")
        }
        print(
            f"  {name:>10}: {med['updates_per_s']:7.1f} updates/s, "
            f"{med['env_steps_per_s']:8.0f} env steps/s"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
