"""The task: a frozen value, checked on construction, named in TASKS."""

import json

import pytest

from mnist_loc.task import TASKS, Task, get_task


@pytest.mark.parametrize("bad", [27, 0, -5, 75.0, 75.5, "75", True])
def test_bad_canvas_size(bad):
    with pytest.raises(ValueError, match="canvas_size"):
        Task(canvas_size=bad)


@pytest.mark.parametrize(
    "task,match",
    [
        (dict(scale=(0.2, 1.0)), "0.25 <= lo <= hi"),
        (dict(scale=(2.0, 1.0)), "0.25 <= lo <= hi"),
        (dict(scale=(1.0, 3.0)), "larger than the 75 px canvas"),
        (dict(scale=1.0), "pair"),
        (dict(box="tight"), "box must be one of"),
        (dict(clutter=-1), "clutter must be >= 0"),
        (dict(clutter_size=29), "clutter_size must be <= 28"),
        (dict(splits="random"), "splits must be one of"),
        (dict(dataset="kmnist", splits="mnist-cluttered"), "original file order"),
    ],
)
def test_bad_task_knobs(task, match):
    with pytest.raises(ValueError, match=match):
        Task(**task)


def test_literature_tasks_are_what_the_papers_use():
    assert (TASKS["translated-60"].canvas_size, TASKS["translated-60"].clutter) == (60, 0)
    for name, size, pieces in (("cluttered-60", 60, 4), ("cluttered-100", 100, 8)):
        task = TASKS[name]
        assert (task.canvas_size, task.clutter, task.clutter_size, task.clutter_overlap, task.splits) == (size, pieces, 8, True, "mnist-cluttered")
        assert Task.from_dict(task.to_dict()) == task and task.name == name
    assert TASKS["course"] == Task() and Task().name == "course" and Task(canvas_size=61).name is None


def test_task_is_frozen_round_trips_and_describes_itself():
    task = TASKS["cluttered-100"]
    with pytest.raises(Exception):
        task.clutter = 3
    assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert Task.from_dict({**task.to_dict(), "class_names": list("0123456789")}) == task, "task.json carries class names"
    assert Task.from_dict({"dataset": "mnist", "canvas_size": 75, "scale": [1, 1], "box": "patch", "clutter": 0}) == TASKS["course"], "an older task.json"
    with pytest.raises(ValueError, match="unknown task field"):
        Task.from_dict({"canvas": 75})
    assert task.describe() == "cluttered-100: mnist on 100x100, 28 px digits, patch boxes, 8 distractors of 8x8 (may overlap the target), mnist-cluttered splits 50k/10k/10k"
    assert TASKS["sized"].replace(clutter=2).describe().startswith("mnist on 75x75, scale 0.5-2, ink boxes, 2 distractors of 8x8 (outside the target)")
    assert Task(scale=[0.5, 2]).scale == (0.5, 2.0) and Task(scale=[0.5, 2]).to_dict()["scale"] == [0.5, 2.0]
    assert get_task(None) is TASKS["course"] and get_task("sized") is TASKS["sized"]
    with pytest.raises(ValueError, match="named tasks are course, sized"):
        get_task("clutter-60")
