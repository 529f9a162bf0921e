"""The training schedule shared by every controller: which objective runs for how many steps, when
to evaluate, what to log. Ray-free, so the distributed Controller (learner/controller.py) and the
in-process one (learner/local.py) run exactly the same loop; they differ only in how a step's
rollout, grading, update and weight sync are carried out.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from actors.engines.base import SamplingParams
from graders.base import Task
from learner.losses import Objective, stage_schedule
from protos import Problem, RunConfig


def held_out_label(task) -> str:
    """What an evaluation of this TaskConfig reads, for tables and logs: a validation slice says so."""
    if task.eval_offset:
        return f"held-out problems {task.eval_offset}-{task.eval_offset + task.eval_size - 1} (a validation slice)"
    return f"{task.eval_size} held-out problems"


class TrainLoop:
    cfg: RunConfig
    task: Task
    rng: np.random.Generator
    version: int
    log: Callable[[str], None]

    def eval_request(self) -> tuple[list[Problem], SamplingParams]:
        """The held-out problems (task.eval_size of them from task.eval_offset), decoded greedily once
        each: the paper's evaluation protocol."""
        params = SamplingParams(self.cfg.eval.max_new_tokens or self.cfg.score.max_new_tokens, temperature=0.0)
        start = self.cfg.task.eval_offset
        return self.task.eval_problems(start + self.cfg.task.eval_size)[start:], params

    def eval_record(self, step: int, metrics: dict[str, float]) -> dict:
        """One evaluation's record (metrics.jsonl): the five metrics at this step's policy version."""
        return {"kind": "eval", "step": step, "policy_version": self.version, **metrics}

    def train_record(self, objective: Objective, step: int, stats: dict, **seconds: float) -> dict:
        """One training step's record (metrics.jsonl, telemetry): the learner's stats, the step's
        phase timings (rollout_s, grading_s, sync_s, step_s) and the throughputs they imply."""
        return {
            "kind": "train", "stage": objective.stage, "method": objective.method, "step": step,
            "policy_version": self.version, **stats, **seconds,
            "rollout_tokens_per_s": stats["rollout_tokens"] / max(seconds["rollout_s"], 1e-9),
            "learner_tokens_per_s": stats["learner_tokens"] / max(stats["learner_s"], 1e-9),
        }

    def train_request(self) -> tuple[list[Problem], SamplingParams]:
        """A step's fresh training problems and its sampling (seeded from the run's generator)."""
        sc = self.cfg.score
        problems = self.task.train_problems(sc.prompts_per_step, self.rng)
        return problems, SamplingParams(sc.max_new_tokens, sc.temperature, seed=int(self.rng.integers(2**31)))

    def train_step(self, objective: Objective, step: int) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def train(self) -> None:
        schedule = stage_schedule(self.cfg.score)
        total = sum(n for _, n in schedule)
        step = 0
        for objective, steps in schedule:
            label = f"stage {objective.stage}" if objective.method == "score" else objective.method
            for i in range(steps):
                step += 1
                r = self.train_step(objective, step)
                self.log(
                    f"{label} step {i + 1}/{steps} ({step}/{total}) | reward@t1 {r['reward_t1']:.3f} "
                    f"@t2 {r['reward_t2']:.3f} | KL t1 {r['kl_t1']:.4f} t2 {r['kl_t2']:.4f} | "
                    f"{r['rollout_tokens_per_s']:.0f} rollout tok/s | {r['step_s']:.1f}s "
                    f"(rollout {r['rollout_s']:.1f} grade {r['grading_s']:.1f} learn {r['learner_s']:.1f} "
                    f"sync {r['sync_s']:.1f})"
                )
                if self.cfg.eval.every_steps and step % self.cfg.eval.every_steps == 0 and step < total:
                    m = self.evaluate(step)
                    self.log(f"eval @ step {step}: Acc@t1 {m['acc_t1']:.1f} Acc@t2 {m['acc_t2']:.1f} Δ {m['delta']:+.1f}")
