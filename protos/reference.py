"""The README's configuration reference, generated from RunConfig (`python -m protos.reference`)."""
from __future__ import annotations

from pydantic import BaseModel

from protos.config import RunConfig


def _rows(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _rows(annotation, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        yield f"| `{prefix}{name}` | `{default!r}` | {field.description or ''} |"


def reference() -> str:
    return "\n".join(["| key | default | meaning |", "| --- | --- | --- |", *_rows(RunConfig)])


if __name__ == "__main__":
    print(reference())
