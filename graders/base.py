"""What a task is: problems, the self-correction instruction, and a grader that never raises."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from protos import Grade, Problem


class Task(ABC):
    name: str
    # The self-correction instruction p appended after attempt 1; rendered once per run by actors.turns.
    instruction: str

    @abstractmethod
    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        """n training problems; never one from the held-out split."""

    @abstractmethod
    def eval_problems(self, n: int) -> list[Problem]:
        """The first n problems of the fixed held-out split (same every call)."""

    @abstractmethod
    def grade(self, problem: Problem, completion: str) -> Grade:
        """Score one attempt. Must return a Grade for any completion, however malformed."""

    def corpus(self, n: int, rng: np.random.Generator) -> list[str]:
        """Text to train a tokenizer on: prompts, answers and the instruction."""
        texts = []
        for p in self.train_problems(n, rng):
            # Every trace holds the instruction once, so it is weighted as in real sequences.
            texts += [p.prompt, p.answer, self.instruction]
        return texts


class GeneratedTask(Task):
    """A task that generates its problems: a fixed held-out split, drawn once with the task's own
    seed (never the run's), and training draws that never repeat a held-out prompt."""

    held_out_seed: int

    @abstractmethod
    def _draw(self, n: int, rng: np.random.Generator, exclude: set[str]) -> list[Problem]:
        """n problems drawn with rng, none whose prompt is in exclude."""

    def _split(self, held_out: int) -> None:
        self._eval = self._draw(held_out, np.random.default_rng(self.held_out_seed), exclude=set())
        self._eval_keys = {p.prompt for p in self._eval}

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        return self._draw(n, rng, exclude=self._eval_keys)

    def eval_problems(self, n: int) -> list[Problem]:
        if n > len(self._eval):
            raise ValueError(f"task.eval_offset + task.eval_size = {n} exceeds the held-out split ({len(self._eval)} problems)")
        return self._eval[:n]
