"""Graders measured: sandbox overhead per program, and grading throughput with G pool actors.

Two tables, no pass/fail:
  1. the median wall time of a trivial program (`pass`) in the sandbox, bwrap against the plain
     subprocess fallback, with a bare interpreter start beside them for scale;
  2. programs/s (HumanEval canonical solutions with their tests) and math answers/s through a
     GraderPool of G = 1 and 2 actors on a local Ray.

    python benchmarks/bench_graders.py [--repeats 30] [--programs 64] [--answers 200]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graders.humaneval_task import HumanEvalTask  # noqa: E402
from graders.math_task import MathTask  # noqa: E402
from graders.pool import GraderPool  # noqa: E402
from graders.sandbox import Limits, _sandbox_python, bwrap_works, run_python  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def sandbox_overhead(repeats: int) -> None:
    python = _sandbox_python()
    rows = [("bare interpreter start (no sandbox)",
             median_ms(lambda: subprocess.run([python, "-I", "-S", "-B", "-c", "pass"], check=True), repeats))]
    for isolation in (["bwrap"] if bwrap_works() else []) + ["fallback"]:
        rows.append((f"sandbox, {isolation}", median_ms(partial(run_python, "pass", Limits(), isolation), repeats)))
    print(f"\nSandbox: median wall time of a trivial program ({repeats} runs, {python})")
    print(f"{'':40} {'ms':>8}")
    for name, ms in rows:
        print(f"{name:40} {ms:8.1f}")


def throughput(num_programs: int, num_answers: int) -> None:
    code_task, math_task = HumanEvalTask(), MathTask()
    code_problems = [code_task.problem(f"HumanEval/{i % 164}") for i in range(num_programs)]
    code_completions = [p.answer for p in code_problems]
    samples = math_task.train_problems(num_answers, np.random.default_rng(0))
    math_completions = [f"Final Answer: The final answer is ${p.answer}$. I hope it is correct." for p in samples]
    math_task.judge.close()

    print(f"\nGrading throughput through a GraderPool ({num_programs} HumanEval programs, {num_answers} math answers)")
    print(f"{'G actors':>8} {'programs/s':>11} {'answers/s':>10}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for num_actors in (1, 2):
            rates = []
            for task_name, problems, completions in (("humaneval", code_problems, code_completions),
                                                      ("math", samples, math_completions)):
                pool = GraderPool(task_name, num_actors=num_actors, num_cpus_per_actor=1)
                pool.grade(problems[:num_actors], completions[:num_actors])  # actors up, servers started
                start = time.perf_counter()
                grades = pool.grade(problems, completions)
                rates.append(len(grades) / (time.perf_counter() - start))
                pool.shutdown()
            print(f"{num_actors:>8} {rates[0]:11.1f} {rates[1]:10.1f}")
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--programs", type=int, default=64)
    parser.add_argument("--answers", type=int, default=200)
    args = parser.parse_args()
    sandbox_overhead(args.repeats)
    throughput(args.programs, args.answers)


if __name__ == "__main__":
    main()
