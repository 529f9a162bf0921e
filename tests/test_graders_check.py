"""`python -m graders.check`: grades a JSONL of completions offline, bad lines and all."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graders.check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def write_jsonl(path: Path, lines: list) -> str:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_humaneval_file_with_bad_lines(tmp_path):
    path = write_jsonl(tmp_path / "samples.jsonl", [
        {"task_id": "HumanEval/53", "completion": "    return x + y\n"},
        {"task_id": "HumanEval/53", "completion": "    return x - y\n"},
        "{not json",
        {"task_id": "HumanEval/99999", "completion": "    pass\n"},
        {"completion": "    pass\n"},
        {"task_id": "HumanEval/53", "completion": "    while True:\n        pass\n"},
    ])
    result = check("--task", "humaneval", "--params", '{"timeout_s": 2}', path)
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["task_id"], o["status"]) for o in out] == [
        ("HumanEval/53", "pass"), ("HumanEval/53", "fail"), (None, "error"), (None, "error"), (None, "error"),
        ("HumanEval/53", "timeout"),
    ]
    assert [o["reward"] for o in out] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert "AssertionError" in out[1]["detail"]
    assert "samples.jsonl:3: not valid JSON" in out[2]["detail"]
    assert "samples.jsonl:4: no problem 'HumanEval/99999' in HumanEval" in result.stderr
    assert "samples.jsonl:5: needs a string field 'task_id'" in result.stderr
    assert "graded 6 lines" in result.stderr and "pass rate 0.167" in result.stderr and "3 bad input lines" in result.stderr
    assert result.returncode == 1


def test_math_file_uses_the_answer_field(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"task_id": "a", "completion": "Final Answer: The final answer is $\\frac12$. I hope it is correct.", "answer": "0.5"},
        {"task_id": "b", "completion": "so \\boxed{3}", "answer": "4"},
        {"task_id": "sample-01", "completion": "\\boxed{391}"},  # no answer: the default file's reference
    ])
    result = check("--task", "math", path)
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["task_id"], o["status"]) for o in out] == [("a", "pass"), ("b", "fail"), ("sample-01", "pass")]
    assert "pass 2" in result.stderr and "fail 1" in result.stderr and "pass rate 0.667" in result.stderr


def test_usage_errors_are_clear(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"task_id": "a", "completion": "b"}])
    assert "unknown task 'nope'" in check("--task", "nope", path).stderr
    assert "no such file" in check("--task", "math", str(tmp_path / "missing.jsonl")).stderr
    assert "--params is not valid JSON" in check("--task", "math", "--params", "{", path).stderr
