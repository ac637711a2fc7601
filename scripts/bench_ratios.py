#!/usr/bin/env python3
"""Ratios of a benchmark run's scenarios to the bounds measured around them.

Reads the JSON lines the bench scripts collect (one object per scenario or bound, in the
order they ran) and prints each scenario's throughput against the mean of the bound
measured just before and just after it:
  enroll-token   / pgbench-enroll-token-shape
  validate-wrong / argon2-alone
"""
import json
import sys

PAIRS = {
    "enroll-token": "pgbench-enroll-token-shape",
    "validate-wrong": "argon2-alone",
}


def main(path):
    with open(path) as results:
        rows = [json.loads(line) for line in results if line.strip().startswith("{")]
    print("-- ratios to the bound measured just before and just after (mean):")
    print(f"{'scenario':<18} {'req/s':>9} {'p99 ms':>8} {'bound':<28} {'before':>9} {'after':>9} {'ratio':>6}")
    for index, row in enumerate(rows):
        bound = PAIRS.get(row["scenario"])
        if bound is None:
            continue
        before = next((r["rps"] for r in reversed(rows[:index]) if r["scenario"] == bound), None)
        after = next((r["rps"] for r in rows[index + 1:] if r["scenario"] == bound), None)
        around = [value for value in (before, after) if value]
        if not around:
            continue
        mean = sum(around) / len(around)
        print(
            f"{row['scenario']:<18} {row['rps']:>9.1f} {row.get('p99_ms', 0):>8.1f} {bound:<28} "
            f"{before or 0:>9.1f} {after or 0:>9.1f} {row['rps'] / mean:>6.2f}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
