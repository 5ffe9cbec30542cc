"""Cost of the prioritized-replay tree operations in the replay server, in-process.

    .venv/bin/python bench/per_tree.py [--capacity 100000] [--batch 128] [--batches 16]

Prints CPU microseconds per call (process time, so other load on the machine
inflates it less than wall time) for what one Sample RPC (K batches of B) and one
UpdatePriorities call (K*B rows) and one Push (64 rows) add on a full buffer,
next to the uniform draw they replace.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from replay_server.priorities import Priorities


def timed(fn, repeat: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    c, b, k = args.capacity, args.batch, args.batches
    p = Priorities(c, alpha=0.6, eps=1e-3)
    for start in range(0, c, 4096):
        idx = np.arange(start, min(start + 4096, c))
        p.on_insert(idx, rng.random(len(idx)).astype(np.float32))
    index, key, _, _ = p.sample(b, k, rng)
    new = rng.random(b * k).astype(np.float32)
    push_idx = np.arange(64)
    push_prio = rng.random(64).astype(np.float32)
    rows = [
        ("uniform draw (K*B)", timed(lambda: rng.integers(0, c, size=b * k), args.repeat)),
        ("PER sample (K*B)", timed(lambda: p.sample(b, k, rng), args.repeat)),
        ("PER update (K*B)", timed(lambda: p.update(index, key, new), args.repeat)),
        ("PER insert (64)", timed(lambda: p.on_insert(push_idx, push_prio), args.repeat)),
    ]
    print(f"capacity {c}, K={k} batches of B={b}")
    for name, us in rows:
        print(f"  {name:<20} {us:9.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
