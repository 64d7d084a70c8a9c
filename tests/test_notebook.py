"""The notebook runs top to bottom from a clean kernel with small parameters."""

import json

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def execute(notebook, tmp_path, parameters):
    """Run ``notebook`` (a path below the repository) with papermill into ``tmp_path``, never
    over the committed notebook, from the notebook's own folder; fail on an error cell.
    Returns its printed text, its Markdown outputs and its image outputs."""
    papermill = pytest.importorskip("papermill")
    source = ROOT / notebook
    executed = tmp_path / f"executed-{source.name}"
    papermill.execute_notebook(
        str(source), str(executed), parameters=parameters, cwd=str(source.parent), kernel_name="python3", progress_bar=False,
    )
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    markdown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    return text, markdown, images


def test_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    parameters = {"EPOCHS": 1, "STEPS_PER_EPOCH": 50, "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "run"), "CHECK_CANVASES": 1000}
    text, markdown, images = execute("object_localization.ipynb", tmp_path, parameters)
    assert "Test report" in text and "mean IoU" in text and "reach IoU >= 0.6" in text
    assert "METRICS" in text
    assert len(images) >= 6, "sample canvases, history, predictions, histogram, worst cases and heatmaps are drawn"
    assert "| classification | 1,000 |" in markdown and "| bounding_box | 1,000 |" in markdown, "both heads' faithfulness"
    assert "float32 trunk" in text and "bfloat16 trunk" in text and text.count("on 1,000 canvases") == 2
    assert {"model.keras", "metrics.json", "history.csv", "task.json", "predictions.png"} == {p.name for p in (tmp_path / "run").iterdir()}


def test_harder_canvases_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    parameters = {"EPOCHS": 1, "STEPS_PER_EPOCH": 5, "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "runs"), "CHECK_CANVASES": 100}
    text, markdown, images = execute("notebooks/harder_canvases.ipynb", tmp_path, parameters)
    assert "(a) course task" in markdown and "(c) (b) + 4 fragments · mnist_loc" in markdown and "mean IoU, small" in markdown
    assert text.count("train_seconds") == 4
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["sized-cluttered-course-lab", "sized-cluttered-mnist_loc", "sized-course-lab", "sized-mnist_loc"]
    assert "| sized-cluttered | mnist_loc |" in markdown, "the runs' table, read back from their folders"
    assert len(images) >= 2 + 2 * 3 + 1, "task samples, then per task: by size, predictions, worst cases; heatmaps of (c)'s worst"
    assert "| bounding_box | 100 |" in markdown and "inside the predicted box" in text, "faithfulness of both heads on (c)"


def test_your_own_model_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    parameters = {"TASK_NAMES": ["cluttered-60"], "SEEDS": [0], "EPOCHS": 1, "STEPS_PER_EPOCH": 5,
                  "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "runs")}
    text, markdown, images = execute("notebooks/your_own_model.ipynb", tmp_path, parameters)
    assert text.count("trained into") == 2 and "read back" not in text, "both models trained, nothing there to reuse"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["cluttered-60-course-seed0", "cluttered-60-glimpse-seed0"]
    assert "| cluttered-60 | mnist_loc | default (epochs=1, steps_per_epoch=5) | 1 |" in markdown
    assert "| cluttered-60 | glimpse | default (epochs=1, steps_per_epoch=5) | 1 |" in markdown, "the runs' table, from the folders"
    assert "| cluttered-60 | conv. 2 layers 8.09, RAM 4.04" in markdown, "the published errors beside ours"
    assert len(images) == 1 + 2 + 1, "the task's canvases, each model's worst cases, where both look"
    assert text.count("mass inside the true box") == 2 and "glimpse on these 8: class right" in text
    assert "glimpse on cluttered-60:" in text and "course on cluttered-60:" in text


def test_several_digits_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    parameters = {"SEEDS": [0], "EPOCHS": 1, "STEPS_PER_EPOCH": 5, "CURVE_EPOCHS": [2], "COURSE_SEEDS": [0],
                  "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "runs")}
    text, markdown, images = execute("notebooks/several_digits.ipynb", tmp_path, parameters)
    assert "multi-mnist: mnist on 50x50, 0-2 digits by AIR's rules" in text and "trained into" in text
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["course-detector-seed0", "curve-2", "multi-mnist-seed0"]
    assert "| seed 0 |" in markdown and "| AP50 per class |" in markdown, "the test table, read back from the run folder"
    assert "count accuracy" in text and text.count("passes:") == 2, "the curve's two points"
    assert "| course | mnist_loc_detector |" in markdown and "course model (object_localization.ipynb's run)" in text
    assert len(images) >= 1 + 1 + 1 + 1, "task canvases, curve, test canvases, unsure canvases (worst ones when any)"


def test_dense_scenes_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    parameters = {"SEEDS": [0], "EPOCHS": 1, "STEPS_PER_EPOCH": 3, "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "runs")}
    text, markdown, images = execute("notebooks/dense_scenes.ipynb", tmp_path, parameters)
    assert "mnist-detection: mnist on 300x300, 1-20 digits by generate_data.py's rules" in text and "trained into" in text
    assert "1,000 test canvases: " in text and "detector 'pyramid'" in text
    assert "(2, 75, 75, 14)" in text and "(2, 21)" in text, "the pyramid detector's grid and count head"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["mnist-detection-seed0"]
    assert "| seed 0 |" in markdown and " AR@20 |" in markdown, "the test table, read back from the run folder"
    assert "| digit size | digits | found |" in markdown and "peak RSS of this process" in text
    assert len(images) == 3, "task canvases, the densest test canvases, the worst misses"
