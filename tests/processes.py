"""What the fault tests ask of a process they killed, by PID."""
from pathlib import Path


def process_state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, Z, ...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def process_ended(pid: int) -> bool:
    """Gone, or a zombie (dead, not yet reaped by its parent)."""
    return process_state(pid) in (None, "Z", "X")
