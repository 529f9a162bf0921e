import numpy as np
import pytest

from graders.registry import make_task, task_names


def test_registry_knows_sort_and_names_the_choices_on_a_typo():
    assert "sort" in task_names()
    with pytest.raises(ValueError, match="registered: .*sort"):
        make_task("sortt")
    with pytest.raises(ValueError, match="task.params for 'sort'"):
        make_task("sort", {"lenght": 3})


def test_train_and_held_out_splits_are_disjoint_and_the_held_out_split_is_fixed(sort_task):
    held_out = {p.prompt for p in sort_task.eval_problems(2000)}
    train = sort_task.train_problems(20000, np.random.default_rng(7))
    assert not held_out & {p.prompt for p in train}
    assert [p.id for p in make_task("sort", {}).eval_problems(50)] == [p.id for p in sort_task.eval_problems(50)]


def test_grading(sort_task):
    p = sort_task.train_problems(1, np.random.default_rng(0))[0]
    numbers = p.answer.split()
    assert sort_task.grade(p, p.answer).reward == 1.0
    assert sort_task.grade(p, "  " + " ".join(numbers) + " \n").status == "pass"
    wrong = " ".join(numbers[:-1])
    assert sort_task.grade(p, wrong).reward == 0.0
    for junk in ["", "banana", "1 2 x", "\x00\xff" * 100, "9" * 10000]:
        g = sort_task.grade(p, junk)
        assert g.reward == 0.0 and g.status == "fail"


def test_problem_shape_follows_params():
    task = make_task("sort", {"min_len": 3, "max_len": 3, "max_value": 9})
    for p in task.train_problems(50, np.random.default_rng(1)):
        values = [int(v) for v in p.prompt.split("\n")[0].split()[1:]]
        assert len(values) == 3 and max(values) <= 9
        assert p.answer.split() == [str(v) for v in sorted(values)]


def test_a_task_too_small_to_train_on_outside_the_held_out_split_is_refused_by_name():
    # Nine lists of two numbers up to 2, all held out: training draws used to loop forever.
    with pytest.raises(ValueError, match=r"min_len=2, max_len=2, max_value=2 has 9 distinct problems.*raise max_value"):
        make_task("sort", {"min_len": 2, "max_len": 2, "max_value": 2})
    task = make_task("sort", {"min_len": 2, "max_len": 2, "max_value": 9, "held_out": 50})  # 100 lists, some left
    assert task.train_problems(10, np.random.default_rng(0))


def test_an_eval_offset_evaluates_a_disjoint_validation_slice_of_the_held_out_split(sort_task):
    from learner.driver.loop import TrainLoop
    from protos import load_config

    def request(*settings):
        return TrainLoop(load_config(None, list(settings)), sort_task, None, print, print).eval_request()

    reported = request("task.eval_size=100")
    assert reported.params.temperature == 0.0 and reported.k == 1
    test = reported.problems
    validation = request("task.eval_size=100", "task.eval_offset=1000").problems
    assert test == sort_task.eval_problems(100)
    assert validation == sort_task.eval_problems(1100)[1000:]
    assert not {p.prompt for p in test} & {p.prompt for p in validation}
    with pytest.raises(ValueError, match=r"task.eval_offset \+ task.eval_size = 2050 exceeds the held-out split \(2000"):
        request("task.eval_size=100", "task.eval_offset=1950")


def test_a_validation_slice_is_named_as_such_in_tables_and_logs():
    from learner.driver.loop import held_out_label
    from protos import load_config

    assert held_out_label(load_config().task) == "256 held-out problems (0-255)"
    sliced = load_config(None, ["task.eval_size=256", "task.eval_offset=1000"]).task
    assert held_out_label(sliced) == "held-out problems 1000-1255 (a validation slice)"
