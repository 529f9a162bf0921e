"""Plain data across the sandbox wall: builtin values to JSON and back, nothing else.

A graded program's return value crosses as JSON and is rebuilt on the trusted side from builtin
types only, so what the grader compares is an int, a str, a tuple... never an object of the
program's (an always-equal `__eq__`, a `__class__` that lies). JSON has no tuples, sets, dict keys
other than strings, bytes or complex numbers; those travel tagged as a one-key object, and lists
as JSON arrays. `decode` trusts nothing in what it is given: unknown shapes raise ValueError.
Standard library only: `encode` runs inside the sandbox too.
"""
import json

MAX_ITEMS = 200_000  # values in one encoded result; past it the result is refused
# Exact types: a subclass may override __eq__, __repr__, anything. A scalar is passed as it is,
# without a call: most values crossing are scalars or flat lists of them (the hot path).
_SCALARS = frozenset({type(None), bool, int, float, str})


def encode(value):
    """A JSON-serialisable form of `value`; TypeError for anything but builtin data."""
    return value if type(value) in _SCALARS else _encode(value, [MAX_ITEMS - 1])


def _encode(value, budget):
    """`value`, already counted against the budget, encoded; its members are counted here, all at once."""
    kind = type(value)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        _spend(budget, len(value))
        members = [v if type(v) in _SCALARS else _encode(v, budget) for v in value]
        return members if kind is list else {kind.__name__: members}
    if kind is dict:
        _spend(budget, 2 * len(value))
        return {"dict": [[k if type(k) in _SCALARS else _encode(k, budget),
                          v if type(v) in _SCALARS else _encode(v, budget)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    if kind in _SCALARS:
        return value
    raise TypeError(f"a {kind.__qualname__} is not plain data")


def _spend(budget: list, n: int) -> None:
    budget[0] -= n
    if budget[0] < 0:
        raise TypeError(f"more than {MAX_ITEMS} values")


def dumps(value) -> bytes:
    return json.dumps(encode(value), separators=(",", ":")).encode()


def loads(data: bytes):
    """The value `dumps` encoded; ValueError for anything else (json's own errors included)."""
    try:
        return decode(json.loads(data))
    except (RecursionError, TypeError, ValueError) as exc:  # too deep; unhashable key or member
        raise ValueError(f"not plain data: {type(exc).__name__}: {str(exc)[:200]}") from None


def decode(obj):
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is list:
        return [v if type(v) in _SCALARS else decode(v) for v in obj]
    if kind is dict and len(obj) == 1:
        (tag, body), = obj.items()
        if tag in ("tuple", "set", "frozenset") and type(body) is list:
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](decode(v) for v in body)
        if tag == "dict" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            return {decode(k): decode(v) for k, v in body}
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "complex" and type(body) is list and len(body) == 2 and all(type(x) is float for x in body):
            return complex(*body)
    raise ValueError(f"not plain data: {str(obj)[:100]}")
