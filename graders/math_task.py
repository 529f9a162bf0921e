"""MATH-style problems graded by final-answer equivalence (Kumar et al. 2024, section 6).

Problems come from a JSONL file, one object a line: `problem`, and `answer` or a `solution` whose
last \\boxed{} is the answer; `unique_id` or `id` names it (else the file's stem and line number).
The model's answer is what follows its last "The final answer is" (the format the instruction
asks for), or else its last \\boxed{}; math-verify decides equivalence (graders/math_equivalence.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from graders.math_equivalence import MathJudge
from graders.registry import register_task
from graders.split import SplitTask
from protos import Grade, Problem

DEFAULT_PATH = Path(__file__).parent / "data" / "math_sample.jsonl"
_FINAL_ANSWER = re.compile(r"The final answer is\s*(.*?)\s*(?:I hope it is correct|\n|$)", re.DOTALL)
_DOLLARS = re.compile(r"^\$+(.*?)\$+$", re.DOTALL)


@register_task("math")
class MathTask(SplitTask):
    name = "math"
    instruction = (
        "\n\nThere might be an error in the solution above because of lack of understanding of the question. "
        "Please correct the error, if any, and rewrite the solution. Only output the final solution! "
        "At the end of the Solution, when you give your final answer, write it in the form "
        '"Final Answer: The final answer is $answer$. I hope it is correct."\n\n'
    )

    def __init__(self, path: str | None = None, eval_fraction: float = 0.2, timeout_s: float = 5.0):
        self.path = Path(path) if path else DEFAULT_PATH
        problems = load_problems(self.path)
        self._split_problems(problems, eval_fraction, str(self.path))
        self.judge = MathJudge(timeout_s=timeout_s)

    def grade(self, problem: Problem, completion: str) -> Grade:
        answer = final_answer(completion)
        if answer is None:
            detail = "no final answer (neither 'The final answer is' nor \\boxed{})"
            return Grade(reward=0.0, status="fail", detail=detail)
        return self.judge.compare(problem.answer, answer)


def load_problems(path: Path) -> list[Problem]:
    if not path.is_file():
        raise ValueError(f"math task: no such file {path}")
    problems = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            problems.append(_parse_line(line, path, lineno))
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def _parse_line(line: str, path: Path, lineno: int) -> Problem:
    where = f"{path}:{lineno}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("problem"), str):
        raise ValueError(f"{where}: needs a string field 'problem'")
    answer = record.get("answer")
    if answer is None and isinstance(record.get("solution"), str):
        answer = last_boxed(record["solution"])
    if answer is None or str(answer).strip() == "":
        raise ValueError(f"{where}: needs an 'answer', or a 'solution' with a \\boxed{{}} answer")
    problem_id = str(record.get("unique_id") or record.get("id") or f"{path.stem}-{lineno}")
    prompt = f"Problem:\n{record['problem']}\n\nSolution:"
    return Problem(id=problem_id, prompt=prompt, answer=str(answer))


def final_answer(completion: str) -> str | None:
    matches = _FINAL_ANSWER.findall(completion)
    answer = matches[-1].rstrip(".").strip() if matches else last_boxed(completion)
    if not answer:
        return None
    unwrapped = _DOLLARS.match(answer)
    return unwrapped.group(1).strip() if unwrapped else answer


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    open_brace = text.index("{", start)
    depth = 0
    for i in range(open_brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_brace + 1 : i]
    return None  # unbalanced: the generation was cut off inside the box
