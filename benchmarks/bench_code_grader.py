"""HumanEval grading throughput: a sandbox per program (before) against warm sandboxes (now).

Both paths grade the same canonical solutions in one run, side by side, with 1 and 2 grading
threads (this machine has 2 cores):
  one-shot  what the grader did before: graders/sandbox.py's run_python per program (bwrap and an
            interpreter start-up each), the program running the problem's own check() and
            printing a token;
  warm      HumanEvalTask.grade now: a fork per program in a warm sandbox (graders/warm_sandbox.py),
            check() in the grader, its calls answered by the program with plain data, in one reply
            (the calls recorded from the canonical solutions first, once per process, untimed:
            training grades each problem many times).
Each thread count runs `--rounds` rounds, one-shot then warm in each, so that both paths see the
same drift of a shared machine; prints each path's median programs/s and the ratio of the medians
(with the range of the rounds' own ratios), and the CPU time each program costs (the grader, the
sandboxes and the programs together, from a cpuacct cgroup where there is one), which other work
on a shared machine moves less.
Last, the programs' own work: the same programs and check() run bare by the sandbox's interpreter,
with no sandbox at all (the canonical solutions are trusted), and each path's CPU per program
beyond it: the part a grader's design can change (HumanEval/75's canonical solution alone computes
for about 0.1 s, which every path pays).
No pass/fail.

    python benchmarks/bench_code_grader.py [--programs 164] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graders.humaneval_task import HumanEvalTask  # noqa: E402
from graders.sandbox import Limits, _sandbox_python, run_python  # noqa: E402


def one_shot(task: HumanEvalTask, problem) -> str:
    record = task._records[problem.id]
    token = secrets.token_hex(16)
    program = (record["prompt"] + problem.answer + f"\n\n{record['test']}\n\ncheck({record['entry_point']})\n"
               f"print({token!r})\n")
    result = run_python(program, Limits(wall_s=10, cpu_s=10, memory_mb=1024))
    return "pass" if result.exit_code == 0 and result.output.rstrip().endswith(token) else result.output[-300:]


def own_work_ms(task: HumanEvalTask, problems: list) -> float:
    """CPU milliseconds per program of the programs and check() alone: run bare, one after another,
    by the sandbox's interpreter in a plain process (the canonical solutions are trusted), timed
    inside it so that its start-up is left out. The tests are compiled before the clock starts, as
    the warm grader caches them: what is left is what every path must pay."""
    records = [task._records[problem.id] for problem in problems]
    programs = [(record["prompt"] + problem.answer, record["test"], record["entry_point"])
                for record, problem in zip(records, problems)]
    timer = """import json, sys, time
programs = [(source, compile(test, "tests.py", "exec"), entry) for source, test, entry in json.load(sys.stdin)]
start = time.process_time()
for source, tests, entry in programs:
    namespace = {"__name__": "__main__"}
    exec(compile(source, "program.py", "exec"), namespace)
    exec(tests, namespace)
    namespace["check"](namespace[entry])
print(1000 * (time.process_time() - start) / len(programs))
"""
    done = subprocess.run([_sandbox_python(), "-I", "-S", "-c", timer], input=json.dumps(programs),
                          capture_output=True, text=True, check=True)
    return float(done.stdout.splitlines()[-1])


def warm(task: HumanEvalTask, problem) -> str:
    grade = task.grade(problem, problem.answer)
    return "pass" if grade.status == "pass" else f"{problem.id}: {grade}"


class CpuMeter:
    """CPU time of this process and everything it starts, sandboxes and programs included, from a
    cgroup v1 cpuacct group of its own (root only): a figure other work on a shared machine does not
    move. None where there is no such group."""

    def __init__(self):
        self.group = Path(f"/sys/fs/cgroup/cpuacct/score-bench-{os.getpid()}")
        try:
            self.group.mkdir()
            (self.group / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            self.group = None

    def seconds(self) -> float | None:
        return None if self.group is None else int((self.group / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.group is not None:
            (self.group.parent / "cgroup.procs").write_text(str(os.getpid()))
            time.sleep(0.5)  # the last sandboxes' processes are gone
            try:
                self.group.rmdir()
            except OSError:
                pass


def rate(grade, task: HumanEvalTask, problems: list, threads: int, meter: CpuMeter) -> tuple[float, float | None]:
    """(programs per second, CPU milliseconds per program or None)"""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda p: grade(task, p), problems[:threads]))  # warm sandboxes up, one per thread
        cpu, start = meter.seconds(), time.perf_counter()
        passed = list(pool.map(lambda p: grade(task, p), problems))
        seconds = time.perf_counter() - start
        for sandbox in list(task.pool._idle):
            sandbox.settle()  # the last clean-up counted too
        cpu = None if cpu is None else 1000 * (meter.seconds() - cpu) / len(problems)
    failed = [p for p in passed if p != "pass"]
    assert not failed, f"canonical solutions failed: {failed}"
    return len(problems) / seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--programs", type=int, default=164)
    parser.add_argument("--rounds", type=int, default=3, help="one-shot then warm, this many times per thread count")
    args = parser.parse_args()
    meter = CpuMeter()
    task = HumanEvalTask()
    problems = [task.problem(f"HumanEval/{i % 164}") for i in range(args.programs)]
    print(f"\nHumanEval canonical solutions graded per second ({args.programs} programs, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    start = time.perf_counter()
    rate(warm, task, problems, 2, meter)  # records check()'s calls per problem: once per process
    print(f"(recording check()'s calls of {len({p.id for p in problems})} canonical solutions, once: "
          f"{time.perf_counter() - start:.1f} s)")
    print(f"(medians of {args.rounds} rounds; in brackets, the range of the rounds' own ratios)")
    print(f"{'':>7} {'programs/s':^39} {'CPU ms per program':^27}")
    print(f"{'threads':>7} {'one-shot':>9} {'warm':>9} {'ratio':>7} {'(range)':>11}  {'one-shot':>9} {'warm':>9} {'ratio':>7}")
    sandbox_cpu = {}  # threads -> (one-shot, warm) median CPU ms per program
    for threads in (1, 2):
        rounds = [(rate(one_shot, task, problems, threads, meter), rate(warm, task, problems, threads, meter))
                  for _ in range(args.rounds)]
        before, after = (statistics.median(r[path][0] for r in rounds) for path in (0, 1))
        ratios = [r[1][0] / r[0][0] for r in rounds]
        spread = f"[{min(ratios):.1f}-{max(ratios):.1f}]"
        speed = f"{before:9.1f} {after:9.1f} {after / before:6.1f}x {spread:>11}"
        if meter.group is None:
            cpu = f"{'n/a (no cpuacct cgroup)':>27}"
        else:
            before_cpu, after_cpu = (statistics.median(r[path][1] for r in rounds) for path in (0, 1))
            cpu = f"{before_cpu:9.1f} {after_cpu:9.1f} {before_cpu / after_cpu:6.1f}x"
            sandbox_cpu[threads] = before_cpu, after_cpu
        print(f"{threads:>7} {speed}  {cpu}")
    if sandbox_cpu:
        own = statistics.median(own_work_ms(task, problems) for _ in range(args.rounds))
        print(f"the programs' own work (run bare, no sandbox, by the same interpreter): {own:.2f} ms CPU per "
              "program; beyond it, each path's cost per program:")
        for threads, (before_cpu, after_cpu) in sandbox_cpu.items():
            print(f"  {threads} thread(s): one-shot {before_cpu - own:.1f} ms, warm {after_cpu - own:.2f} ms, "
                  f"{(before_cpu - own) / (after_cpu - own):.1f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    task.pool.close()
    meter.close()


if __name__ == "__main__":
    main()
