"""math-verify behind a pipe: one JSON request a line on stdin, one verdict a line on stdout.

Started by graders/math_equivalence.py as `python -I math_verify_server.py TIMEOUT_S MEMORY_BYTES`.
math-verify's own timeouts use SIGALRM, which works only in a main thread and cannot interrupt
a long C-level computation (9^{9^{9^9}} never returns). So this server, single-threaded and
already holding sympy, forks one child per comparison, waits for its verdict until the deadline,
and kills it otherwise: a pathological expression costs one child, never a hung grader.
Answers are parsed with math-verify's LaTeX grammar only, never evaluated as Python.
"""
import ctypes
import json
import logging
import os
import resource
import select
import signal
import sys

from math_verify import LatexExtractionConfig, parse, verify

_PR_SET_PDEATHSIG = 1
_MAX_REPLY_BYTES = 1 << 16


def compare(reference: str, answer: str) -> dict:
    def parsed(text: str) -> list:
        return parse(f"${text}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)

    gold = parsed(reference)
    if not gold:
        return {"status": "error", "detail": f"reference answer {reference!r} does not parse"}
    pred = parsed(answer)
    if not pred:
        return {"status": "fail", "detail": f"answer {answer!r} does not parse"}
    if verify(gold, pred, timeout_seconds=None):
        return {"status": "pass", "detail": ""}
    return {"status": "fail", "detail": f"{pred[-1]} is not {gold[-1]}"}


def compare_in_child(reference: str, answer: str, timeout_s: float, memory_bytes: int) -> dict:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies if this server is killed
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        try:
            verdict = compare(reference, answer)
        except MemoryError:
            verdict = {"status": "error", "detail": "comparison ran out of memory"}
        except Exception as exc:  # a malformed answer must become a verdict, not a dead child
            verdict = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:500]}
        os.write(write_end, json.dumps(verdict).encode()[:_MAX_REPLY_BYTES])
        os._exit(0)
    os.close(write_end)
    try:
        if not select.select([read_end], [], [], timeout_s)[0]:
            return {"status": "timeout", "detail": f"no verdict within {timeout_s:g}s"}
        reply = b""
        while chunk := os.read(read_end, _MAX_REPLY_BYTES):
            reply += chunk
    finally:
        os.close(read_end)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not reply:
        return {"status": "error", "detail": "comparison process died without a verdict"}
    return json.loads(reply)


def main() -> None:
    timeout_s, memory_bytes = float(sys.argv[1]), int(sys.argv[2])
    logging.disable(logging.WARNING)  # math-verify warns on every call that we disabled its timeouts
    compare("1", "1")  # loads the LaTeX grammar once, before any fork
    print(json.dumps({"status": "ready"}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        verdict = compare_in_child(request["reference"], request["answer"], timeout_s, memory_bytes)
        print(json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
