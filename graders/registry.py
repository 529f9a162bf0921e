"""Task name -> task factory. `make_task(cfg.task.name, cfg.task.params)` is the only lookup."""
from __future__ import annotations

from typing import Callable

from graders.base import Task

_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str):
    def wrap(factory: Callable[..., Task]) -> Callable[..., Task]:
        _TASKS[name] = factory
        return factory

    return wrap


def task_names() -> list[str]:
    _load_builtin()
    return sorted(_TASKS)


def make_task(name: str, params: dict | None = None) -> Task:
    _load_builtin()
    if name not in _TASKS:
        raise ValueError(f"task.name: unknown task {name!r} (registered: {', '.join(sorted(_TASKS))})")
    try:
        return _TASKS[name](**(params or {}))
    except TypeError as exc:
        raise ValueError(f"task.params for {name!r} are wrong: {exc}") from None


def _load_builtin() -> None:
    # Importing a task module registers it; kept lazy so `graders.registry` stays cheap to import.
    import graders.humaneval_task  # noqa: F401
    import graders.math_task  # noqa: F401
    import graders.sort_task  # noqa: F401
