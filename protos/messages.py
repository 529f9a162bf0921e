"""Small messages that cross actor boundaries (per problem or per trace, never per token)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GradeStatus = Literal["pass", "fail", "timeout", "error", "sandbox_violation"]


class Problem(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    prompt: str = Field(description="The task prompt x1 as text.")
    answer: str = Field(description="The reference answer y* the grader compares with.")
    meta: dict[str, Any] = Field(default_factory=dict)


class Grade(BaseModel):
    """A grader's verdict on one attempt. Graders never raise on model output: they return this.

    Status "error" means no verdict was given: the grader itself failed (its sandbox, its
    math-verify server, an exception, or the grader actor died or hung and its retries ran out).
    Its reward is not a judgement of the answer, so training leaves such traces out
    (`protos.batch.rewards` reads it as NaN) instead of treating the answer as wrong.
    """

    reward: float
    status: GradeStatus
    detail: str = ""

    @property
    def given(self) -> bool:
        return self.status != "error"


class TraceMeta(BaseModel):
    """Per-trace metadata of a two-attempt trace; token arrays live in TraceBatch."""

    problem_id: str
    group: int = Field(description="Index of the prompt within its batch; the k samples of a prompt share it.")
    attempt1: str
    attempt2: str
    finish1: str = "stop"
    finish2: str = "stop"
    grade1: Grade | None = None
    grade2: Grade | None = None
