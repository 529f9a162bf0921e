"""The math task: answer extraction, equivalence by math-verify, timeouts, and problem files."""
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from graders.math_equivalence import MathJudge
from graders.math_task import MathTask, final_answer, last_boxed, load_problems
from graders.registry import make_task
from protos import Problem

# (reference, model's answer, equivalent?)
PAIRS = [
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{1}{2}", "1/2", True),
    (r"\frac12", r"\dfrac{1}{2}", True),
    (r"\frac{\sqrt2}{2}", r"\sqrt{2}/2", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    ("3", "x=3", True),
    ("3", "x = 3", True),
    ("(1,2]", "(1, 2]", True),
    ("(1,2]", "[1,2]", False),
    ("(1, 2)", "(1,2)", True),
    ("(2, 5)", "(5, 2)", False),
    (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty,2)\cup(3,\infty)", True),
    (r"(-\infty, 2) \cup (3, \infty)", r"(-\infty,3)\cup(2,\infty)", False),
    ("5", r"5\text{ cm}", True),
    ("5", r"5 \text{ inches}", True),
    (r"20\text{ cm}", "20", True),
    (r"\text{Monday}", "Monday", True),
    (r"\text{Monday}", r"\text{Tuesday}", False),
    (r"90^\circ", "90", True),
    (r"120^\circ", r"100^\circ", False),
    (r"9\pi", r"9 \pi", True),
    (r"2\pi", r"\pi", False),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    (r"\{1,2,3\}", r"\{3,2,1\}", True),
    ("1,2,3", "3, 2, 1", True),
    ("-3, 3", "3, -3", True),
    ("-3, 3", "3", False),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}2\\1\end{pmatrix}", False),
    (r"\text{(B)}", "B", True),
    (r"\text{(B)}", r"\text{(C)}", False),
    (r"2\sqrt{3}", r"\sqrt{12}", True),
    (r"2\sqrt{3}", r"\sqrt{6}", False),
    ("1000", "1,000", True),
    (r"-\frac{3}{4}", "-0.75", True),
    (r"\frac{3}{4}", "-0.75", False),
    ("y = 2x + 3", "2x+3", True),
    (r"\sqrt[3]{8}", "2", True),
    ("0.333", r"\frac{1}{3}", False),
    (r"\$18.90", "18.90", True),
    ("12", "12.0", True),
    ("a+b", "b+a", True),
    (r"\infty", r"\infty", True),
    ("2", "3", False),
    (r"\frac{5}{6}", r"\frac{6}{5}", False),
]


@pytest.fixture(scope="module")
def task():
    task = MathTask(timeout_s=3)
    yield task
    task.judge.close()


def as_completion(answer: str) -> str:
    return f"Some working.\nFinal Answer: The final answer is ${answer}$. I hope it is correct."


@pytest.mark.parametrize("reference, answer, equivalent", PAIRS)
def test_equivalence_table(task, reference, answer, equivalent):
    grade = task.grade(Problem(id="t", prompt="", answer=reference), as_completion(answer))
    assert (grade.status, grade.reward) == (("pass", 1.0) if equivalent else ("fail", 0.0)), grade.detail


def test_the_answer_is_the_final_answer_line_or_else_the_last_box():
    assert final_answer(as_completion(r"\frac{1}{2}")) == r"\frac{1}{2}"
    assert final_answer("The final answer is $0.5$.") == "0.5"
    assert final_answer("first $\\boxed{1}$ then $\\boxed{\\frac{2}{3}}$") == r"\frac{2}{3}"
    both = "so \\boxed{4}.\nFinal Answer: The final answer is $5$. I hope it is correct."
    assert final_answer(both) == "5"
    assert final_answer("no answer at all") is None
    assert final_answer("cut off \\boxed{\\frac{1}{") is None


def test_last_boxed_balances_braces():
    assert last_boxed(r"\boxed{\frac{a}{b}} and \fbox{x^{2}}") == "x^{2}"
    assert last_boxed(r"x = \boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed("nothing") is None


def test_no_final_answer_fails_with_a_reason(task):
    grade = task.grade(Problem(id="t", prompt="", answer="3"), "I do not know.")
    assert grade.status == "fail" and "no final answer" in grade.detail


def test_unparseable_reference_is_an_error(task):
    grade = task.grade(Problem(id="t", prompt="", answer=r"\text{}"), as_completion("1"))
    assert grade.status == "error" and "reference" in grade.detail


def test_pathological_expression_times_out_and_the_judge_goes_on(task):
    grade = task.grade(Problem(id="t", prompt="", answer="3"), as_completion("9^{9^{9^{9}}}"))
    assert (grade.status, grade.reward) == ("timeout", 0.0)
    assert task.grade(Problem(id="t", prompt="", answer="3"), as_completion("3")).status == "pass"


def test_garbage_completions_never_raise(task):
    problem = Problem(id="t", prompt="", answer="3")
    for junk in ["", "\\boxed{", "The final answer is $$$", "\\boxed{\\frac{\\frac{\\frac{}}}}", "\x00" * 100,
                 "The final answer is " + "(" * 5000, "\\boxed{" + "x^" * 2000 + "}"]:
        assert task.grade(problem, junk).status in {"pass", "fail", "error", "timeout"}


def test_judge_is_shared_safely_by_threads(task):
    problem = Problem(id="t", prompt="", answer=r"\frac{1}{2}")
    with ThreadPoolExecutor(4) as pool:
        grades = list(pool.map(lambda a: task.grade(problem, as_completion(a)), ["0.5", "1/3"] * 6))
    assert [g.status for g in grades] == ["pass", "fail"] * 6


def test_judge_restarts_after_its_server_dies():
    judge = MathJudge(timeout_s=3)
    assert judge.compare("1", "1").status == "pass"
    judge._server.kill()
    judge._server.wait()
    assert judge.compare("1", "1").status == "error"  # that one comparison is lost, not the judge
    assert judge.compare("1", "1").status == "pass"
    judge.close()


def test_sample_file_is_the_default_and_split_is_deterministic_and_disjoint(task):
    problems = load_problems(task.path)
    assert len(problems) == 30 and problems[0].answer == "391"  # from the solution's \boxed{}
    again = MathTask()
    n = len(again._split.eval)
    assert [p.id for p in task.eval_problems(n)] == [p.id for p in again.eval_problems(n)]
    train = {p.id for p in task.train_problems(200, np.random.default_rng(0))}
    assert train.isdisjoint(p.id for p in task.eval_problems(n))
    assert len(train) + n == 30
    again.judge.close()


def test_every_sample_problem_accepts_its_own_reference(task):
    for problem in load_problems(task.path):
        assert task.grade(problem, as_completion(problem.answer)).status == "pass", problem.id


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_bad_jsonl_names_the_file_and_line(tmp_path):
    good = json.dumps({"problem": "1+1?", "answer": "2"})
    cases = {
        "not valid JSON": [good, "{oops"],
        "needs a string field 'problem'": [good, json.dumps({"answer": "2"})],
        "needs an 'answer'": [good, json.dumps({"problem": "p", "solution": "no box here"})],
    }
    for message, lines in cases.items():
        path = write_lines(tmp_path / "bad.jsonl", lines)
        with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{message}"):
            MathTask(path=path)
    with pytest.raises(ValueError, match="no such file"):
        MathTask(path=str(tmp_path / "missing.jsonl"))


def test_registered_with_the_papers_instruction(tmp_path):
    lines = [json.dumps({"id": f"p{i}", "problem": f"{i}+1?", "answer": str(i + 1)}) for i in range(40)]
    task = make_task("math", {"path": write_lines(tmp_path / "p.jsonl", lines)})
    assert task.name == "math" and len(task._split.train) + len(task._split.eval) == 40
    assert task.instruction.strip() == (
        "There might be an error in the solution above because of lack of understanding of the question. "
        "Please correct the error, if any, and rewrite the solution. Only output the final solution! "
        "At the end of the Solution, when you give your final answer, write it in the form "
        '"Final Answer: The final answer is $answer$. I hope it is correct."'
    )
    task.judge.close()
