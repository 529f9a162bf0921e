"""What the fault tests ask of a process they killed, by PID."""
from pathlib import Path


def process_ended(pid: int) -> bool:
    """Gone, or a zombie (dead, not yet reaped by its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")
