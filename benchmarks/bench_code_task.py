"""The code task's grading throughput: one training step's programs (32 prompts x 4 samples x 2
attempts = 256), half right (the reference answers), half wrong (a constant off by one), graded
with 1 and 2 threads as a grader actor does (graders/pool.py). Prints programs/s and the median
milliseconds per program. No pass/fail.

    python benchmarks/bench_code_task.py [--programs 256]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graders.code_task import CodeTask  # noqa: E402


def off_by_one(answer: str) -> str:
    """The answer with its last constant one higher (or, with none, a count for a sum...): wrong."""
    constants = list(re.finditer(r"\d+", answer))
    if not constants:
        return " len(xs)" if "len" not in answer else " sum(xs)"
    last = constants[-1]
    return answer[: last.start()] + str(int(last.group()) + 1) + answer[last.end():]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--programs", type=int, default=256)
    args = parser.parse_args()
    task = CodeTask()
    problems = task.train_problems(args.programs, np.random.default_rng(0))
    work = [(p, p.answer if i % 2 else off_by_one(p.answer)) for i, p in enumerate(problems)]
    print(f"code task: {args.programs} programs, half right, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for threads in (1, 2):
        def timed(item):
            start = time.perf_counter()
            grade = task.grade(*item)
            return grade.status, time.perf_counter() - start

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(timed, work[:threads]))  # a warm sandbox per thread
            start = time.perf_counter()
            results = list(pool.map(timed, work))
            seconds = time.perf_counter() - start
        statuses = [s for s, _ in results]
        assert statuses.count("pass") == len(work) // 2, f"expected half to pass: {statuses}"
        median_ms = 1000 * statistics.median(t for _, t in results)
        print(f"{threads} thread(s): {len(work) / seconds:.0f} programs/s, median {median_ms:.1f} ms per program")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    task.pool.close()


if __name__ == "__main__":
    main()
