"""The serving API's request bodies and its errors, in OpenAI's shapes.

Field names, defaults and error bodies follow OpenAI's Completions and Chat Completions APIs as
vLLM's OpenAI-compatible server implements them (vllm/entrypoints/openai/protocol.py): unknown
fields are ignored, as there, so an SDK sending a field this server does not use still works.
The extensions are `attempts`, the number of self-correction turns, and `return_token_ids`.

Either route's request comes down to a list of `Prompt`s, each a conversation whose last message
is the user's task prompt: a completion's `prompt` is one (or, as a list of strings, several
one-message conversations), a chat's `messages` one conversation. actors/turns.py renders it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    """A refused (or failed) request: its HTTP status and OpenAI's error body
    {"error": {"message", "type", "param", "code"}}, `param` naming the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        # OpenAI's own API types every refused request invalid_request_error, an unknown model's 404 included
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Prompt:
    field: str  # where the request holds it, as an error names it: "prompt", "prompt.1", "messages"
    messages: list[tuple[str, str]]  # (role, content), first to last; the last is the user's task prompt

    @property
    def param(self) -> str:
        """The top-level field, an error's `param`."""
        return self.field.split(".")[0]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1, description="Longest attempt in tokens; unset = the run's score.max_new_tokens.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy (OpenAI's default is 1).")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    n: int = Field(1, ge=1, le=16, description="Independent choices, each with its own attempts.")
    stop: list[str] = Field(default_factory=list, description="Up to 4 strings; an attempt ends before the first one.")
    stream: bool = False
    attempts: int = Field(2, description="Self-correction turns: 1 = plain generation; the answer is the last.")
    return_token_ids: bool = Field(False, description="Each attempt's token ids too (vLLM's extension of the same name).")

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, stop):
        """OpenAI's stop is a string, a list of up to 4, or null."""
        stops = [stop] if isinstance(stop, str) else [] if stop is None else stop
        if isinstance(stops, list) and (len(stops) > 4 or not all(isinstance(s, str) and s for s in stops)):
            raise ValueError("stop takes a string or up to 4 non-empty strings")
        return stops


class CompletionRequest(_Request):
    prompt: str | list[str] = Field(description="The task prompt x1, or a list of them: each gets its own n choices, "
                                    "prompt i's choice j at index i*n + j, as OpenAI numbers them.")

    @field_validator("prompt", mode="before")
    @classmethod
    def _text(cls, prompt):
        """OpenAI also takes token ids (a list of ints, or of lists of ints): not here, the prompt is rendered
        from text (actors/turns.py), so they are refused by name rather than as a type error."""
        if isinstance(prompt, list):
            if not prompt:
                raise ValueError("send a prompt, or a non-empty list of prompts")
            if all(isinstance(p, int) for p in prompt) or all(isinstance(p, list) and all(isinstance(t, int) for t in p)
                                                              for p in prompt):
                raise ValueError("token-id prompts are not supported: send text (a string or a list of strings)")
        return prompt

    def prompts(self) -> list[Prompt]:
        if isinstance(self.prompt, str):
            return [Prompt("prompt", [("user", self.prompt)])]
        return [Prompt(f"prompt.{i}", [("user", p)]) for i, p in enumerate(self.prompt)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage]

    def prompts(self) -> list[Prompt]:
        """The conversation as one prompt: system (or developer), user and assistant messages in any
        order, the last one the user's (the task prompt the attempts answer). actors/turns.py renders it
        as the model's turns are rendered in training. No tool messages: this model calls no tools."""
        if not self.messages:
            raise APIError(400, "messages: send at least one message, the last one the user's task prompt", "messages")
        for i, m in enumerate(self.messages):
            if m.role == "tool":
                raise APIError(400, f"messages.{i}.role: tool messages are not supported: this model calls no tools",
                               "messages")
        if self.messages[-1].role != "user":
            raise APIError(400, f"messages: the last message must be the user's task prompt, the one the attempts "
                           f"answer (got {self.messages[-1].role})", "messages")
        return [Prompt("messages", [(m.role, m.content) for m in self.messages])]


def parse(body: bytes, model: type[_Request]) -> _Request:
    """A request body as `model`, or the 400 that names what is wrong with it."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"Malformed JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise APIError(400, f"The request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise APIError(400, f"{field}: {first['msg']}", field.split(".")[0] if field else None) from None
