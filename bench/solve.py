"""Time to solve CartPole-v1 with `dqn train` defaults over several seeds.

    .venv/bin/python bench/solve.py [--seeds 1 2 3] [--max-seconds 300] [-- extra dqn args]

Runs the seeds one after another (each run uses the whole machine), prints a table of
seconds_to_solve (from process start), env_steps_to_solve, updates_to_solve and peak
RSS of the whole process tree, then the medians; writes bench/results/solve.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("extra", nargs="*", help="more `dqn train` flags (after --)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-solve-") as tmp:
        for seed in args.seeds:
            run_dir = Path(tmp) / f"seed{seed}"
            cmd = [
                sys.executable,
                "-m",
                "dqn.cli",
                "train",
                "--env",
                args.env,
                "--seed",
                str(seed),
                "--run-dir",
                str(run_dir),
                "--max-seconds",
                str(args.max_seconds),
                "--log-level",
                "WARNING",
                *args.extra,
            ]
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, check=False)
            s = json.loads((run_dir / "summary.json").read_text())
            rows.append(
                {
                    "seed": seed,
                    **{
                        k: s.get(k)
                        for k in (
                            "solved",
                            "seconds_to_solve",
                            "env_steps_to_solve",
                            "updates_to_solve",
                            "eval_mean",
                            "wall_seconds",
                            "peak_rss_mb",
                        )
                    },
                }
            )
            r = rows[-1]
            print(
                f"seed {seed}: solved={r['solved']} seconds_to_solve={r['seconds_to_solve']} "
                f"env_steps_to_solve={r['env_steps_to_solve']} peak_rss_mb={r['peak_rss_mb']}",
                flush=True,
            )
    print()
    print(
        f"{'seed':>4} {'solved':>6} {'s_to_solve':>10} {'steps_to_solve':>14} "
        f"{'updates':>8} {'eval':>6} {'peak_MiB':>9}"
    )
    for r in rows:

        def fmt(v, spec):
            return format(v, spec) if v is not None else "-"

        print(
            f"{r['seed']:>4} {str(r['solved']):>6} {fmt(r['seconds_to_solve'], '10.1f')} "
            f"{fmt(r['env_steps_to_solve'], '14,')} {fmt(r['updates_to_solve'], '8,')} "
            f"{r['eval_mean']:6.1f} {r['peak_rss_mb']:9.1f}"
        )
    solved = [r for r in rows if r["solved"]]
    result = {"env": args.env, "runs": rows}
    if len(solved) == len(rows):
        result["median_seconds_to_solve"] = statistics.median(r["seconds_to_solve"] for r in rows)
        result["median_env_steps_to_solve"] = statistics.median(
            r["env_steps_to_solve"] for r in rows
        )
        print(
            f"median seconds_to_solve {result['median_seconds_to_solve']:.1f}, median "
            f"env_steps_to_solve {result['median_env_steps_to_solve']:,.0f}"
        )
    else:
        print(f"{len(rows) - len(solved)} of {len(rows)} runs did not solve within the budget")
    result["max_peak_rss_mb"] = max(r["peak_rss_mb"] for r in rows)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "solve.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
