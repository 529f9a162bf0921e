"""Grade a file of completions offline: `python -m graders.check --task NAME FILE.jsonl`.

Input lines are in HumanEval's sample format, {"task_id": ..., "completion": ...}, plus "answer"
(the reference) where the task needs one given (math). Output: one JSON line per input line on
stdout, {"task_id", "reward", "status", "detail"}, in input order; a summary on stderr. A bad
input line gets status "error" and a message naming the line; the other lines are still graded.
Exit status 1 when some input line was bad.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

from graders.pool import GraderWorker
from protos import Grade, Problem


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    start = time.monotonic()
    try:
        worker = GraderWorker(args.task, args.params, threads=args.threads)
    except ValueError as exc:  # unknown task or wrong parameters
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with open(args.file) as f:
        lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]

    records, problems, completions, bad = [], [], [], {}
    for n, line in lines:
        try:
            record, problem, completion = _read_line(line, worker.task)
        except ValueError as exc:
            bad[n] = f"{args.file}:{n}: {exc}"
            print(bad[n], file=sys.stderr)
            continue
        records.append(record)
        problems.append(problem)
        completions.append(completion)
    graded = iter(zip(records, worker.grade_batch(problems, completions)))

    counts: Counter[str] = Counter()
    for n, _ in lines:
        if n in bad:
            task_id, grade = None, Grade(reward=0.0, status="error", detail=bad[n])
        else:
            record, grade = next(graded)
            task_id = record["task_id"]
        counts[grade.status] += 1
        print(json.dumps({"task_id": task_id, "reward": grade.reward, "status": grade.status, "detail": grade.detail}))

    total = sum(counts.values())
    rate = counts["pass"] / total if total else 0.0
    per_status = ", ".join(f"{status} {k}" for status, k in sorted(counts.items()))
    print(f"graded {total} lines in {time.monotonic() - start:.1f}s: {per_status}; pass rate {rate:.3f}"
          + (f"; {len(bad)} bad input lines" if bad else ""), file=sys.stderr)
    return 1 if bad else 0


def _read_line(line: str, task) -> tuple[dict, Problem, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("task_id"), str):
        raise ValueError("needs a string field 'task_id'")
    if not isinstance(record.get("completion"), str):
        raise ValueError("needs a string field 'completion'")
    if "answer" in record:
        problem = Problem(id=record["task_id"], prompt="", answer=str(record["answer"]))
    elif hasattr(task, "problem"):
        try:
            problem = task.problem(record["task_id"])
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    else:
        raise ValueError(f"task {task.name!r} needs the reference in an 'answer' field")
    return record, problem, record["completion"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m graders.check", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--task", required=True, help="registered task name: math, humaneval, sort")
    parser.add_argument("--params", default="{}", help="task parameters as a JSON object")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="programs graded at once")
    parser.add_argument("file", help="JSONL of completions")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.file):
        parser.error(f"no such file: {args.file}")
    try:
        args.params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        parser.error(f"--params is not valid JSON ({exc.msg})")
    return args


if __name__ == "__main__":
    sys.exit(main())
