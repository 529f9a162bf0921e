"""`python -m learner.evaluate RUN_DIR --attempts K`: a checkpoint on the held-out split with K attempts,
through the serving code path (actors/serve/app.py's SelfCorrection: the same checks, rendering and
batched engine calls as the API, without Serve).

Two tables:
  1. greedy, Acc@t1 ... Acc@tK: % of problems whose attempt t is right, each attempt rendered from
     the one before with the task's instruction (Turns), as in training for t = 2;
  2. the SCoRe paper's inference-compute comparison (section 6, "inference-compute scaling"): at an
     equal number of sampled attempts S (temperature 1), parallel sampling with majority voting over
     S first attempts, against S/2 independent chains of 2 sequential attempts with majority voting
     over their last attempts. Votes count answers with whitespace normalised; a tie goes to the
     answer reached first.
"""
from __future__ import annotations

import argparse
import asyncio
from collections import Counter

from actors.serve.app import Choice, EngineCall, SelfCorrection
from actors.serve.checkpoint import resolve
from actors.serve.protocol import Prompt
from graders.base import Task
from graders.registry import make_task
from protos import Problem


class Batched:
    """The engine as SelfCorrection reaches it, batched: calls made while other requests are still
    issuing theirs run as one `generate_batch` (what @serve.batch does in the deployment, without a timer)."""

    def __init__(self, impl: SelfCorrection):
        self.impl, self.pending = impl, []

    async def __call__(self, prompts, params, key, on_tokens=None):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((EngineCall(prompts, params, key, on_tokens), future))
        if len(self.pending) == 1:  # runs after every request that is ready has queued its call
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        for (_, future), gens in zip(batch, self.impl.generate_batch([item for item, _ in batch])):
            future.set_result(gens)


def answer_all(impl: SelfCorrection, problems: list[Problem], n: int, attempts: int, temperature: float) -> list[list[Choice]]:
    """Each problem as one request of n choices, all requests in flight together."""
    generate = Batched(impl)
    max_tokens = impl.served.max_tokens

    async def one(problem: Problem) -> list[Choice]:
        x1s = impl.check(impl.served.name, [Prompt("prompt", [("user", problem.prompt)])], attempts, max_tokens)
        return await impl.run(x1s, n, attempts, max_tokens, temperature, 1.0, None, [], generate)

    async def every():
        return await asyncio.gather(*(one(p) for p in problems))

    return asyncio.run(every())


def majority(texts: list[str]) -> str:
    votes = Counter(" ".join(t.split()) for t in texts)
    return max(votes, key=votes.get)  # Counter keeps first-seen order; max returns the first of a tie


def accuracy(task: Task, problems: list[Problem], answers: list[str]) -> float:
    return 100.0 * sum(task.grade(p, a).reward for p, a in zip(problems, answers)) / len(problems)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m learner.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory, its checkpoint/, or a Hugging Face directory")
    parser.add_argument("--attempts", type=int, default=4, help="K: greedy attempts, and the largest sample budget")
    parser.add_argument("--task", help="for a Hugging Face directory: its task (default sort)")
    parser.add_argument("--problems", type=int, default=256, help="held-out problems, from the first")
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    args = parser.parse_args(argv)

    served = resolve(args.model, args.task)
    task = make_task(served.task_name, served.task_params)
    impl = SelfCorrection.load(served, args.engine, max_attempts=args.attempts)
    problems = task.eval_problems(args.problems)
    print(f"{served.name}: {len(problems)} held-out problems of task {served.task_name}")

    (greedy,) = zip(*answer_all(impl, problems, 1, args.attempts, 0.0))
    accs = [accuracy(task, problems, [c.attempts[t].text for c in greedy]) for t in range(args.attempts)]
    print("\ngreedy | " + " | ".join(f"Acc@t{t + 1}" for t in range(args.attempts)))
    print("| " + " | ".join(f"{a:.1f}" for a in accs) + " |")

    print("\nsampled attempts S | parallel, majority of S | sequential, majority of S/2 chains x 2 attempts")
    for budget in range(2, args.attempts + 1, 2):
        parallel = answer_all(impl, problems, budget, 1, 1.0)
        sequential = answer_all(impl, problems, budget // 2, 2, 1.0)
        par = accuracy(task, problems, [majority([c.last.text for c in cs]) for cs in parallel])
        seq = accuracy(task, problems, [majority([c.last.text for c in cs]) for cs in sequential])
        print(f"| {budget} | {par:.1f} | {seq:.1f} |", flush=True)


if __name__ == "__main__":
    main()
