"""The built-in task: sort a short list of integers.

Why sorting: its mistakes expose themselves. A wrong answer is a list with a number mis-copied,
dropped, repeated or out of place (the warm-started base mostly mis-copies one number), each
visible by reading the answer against the question and fixable by a local edit. So reading
attempt 1 can help attempt 2, the property self-correction needs (on an addition task tried
first, the base's errors came from a skill that re-reading the attempt does not supply).
"""
from __future__ import annotations

import numpy as np

from graders.base import GeneratedTask
from graders.registry import register_task
from protos import Grade, Problem


@register_task("sort")
class SortTask(GeneratedTask):
    name = "sort"
    held_out_seed = 1_000_003
    instruction = "\nThere might be an error in the answer above. Check it against the list and correct it.\nanswer:"

    def __init__(self, min_len: int = 5, max_len: int = 8, max_value: int = 99, held_out: int = 2000):
        if not 2 <= min_len <= max_len:
            raise ValueError(f"need 2 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        if max_value < 1:
            raise ValueError(f"max_value must be >= 1, got {max_value}")
        self.min_len, self.max_len, self.max_value = min_len, max_len, max_value
        self._split(held_out)
        # Training draws skip the held-out lists: were every list held out, they would never end.
        distinct = sum((max_value + 1) ** n for n in range(min_len, max_len + 1))
        if distinct <= len(self._eval_keys):
            raise ValueError(
                f"task.params: sort with min_len={min_len}, max_len={max_len}, max_value={max_value} has "
                f"{distinct} distinct problems and the held-out split ({held_out} drawn) holds every one, leaving "
                "none to train on: raise max_value or max_len"
            )

    def _draw(self, n: int, rng: np.random.Generator, exclude: set[str]) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            length = int(rng.integers(self.min_len, self.max_len + 1))
            values = rng.integers(0, self.max_value + 1, size=length).tolist()
            prompt = "sort: " + " ".join(map(str, values)) + "\nanswer:"
            if prompt in exclude:
                continue
            answer = " " + " ".join(map(str, sorted(values)))
            out.append(Problem(id=f"sort-{'-'.join(map(str, values))}", prompt=prompt, answer=answer))
        return out

    def grade(self, problem: Problem, completion: str) -> Grade:
        expected = problem.answer.split()
        got = completion.split()
        if got == expected:
            return Grade(reward=1.0, status="pass")
        if not all(tok.isdigit() for tok in got):
            return Grade(reward=0.0, status="fail", detail="not a list of integers")
        return Grade(reward=0.0, status="fail", detail=f"{len(got)} numbers, expected {len(expected)}")
