"""The notebook runs top to bottom from a clean kernel with small parameters."""

import json

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e


def test_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    papermill = pytest.importorskip("papermill")
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(ROOT / "object_localization.ipynb"),
        str(executed),  # never the committed notebook
        parameters={"EPOCHS": 1, "STEPS_PER_EPOCH": 50, "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "run"), "CHECK_CANVASES": 1000},
        cwd=str(ROOT),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    assert "Test report" in text and "mean IoU" in text and "reach IoU >= 0.6" in text
    assert "METRICS" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6, "sample canvases, history, predictions, histogram, worst cases and heatmaps are drawn"
    markdown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "| classification | 1,000 |" in markdown and "| bounding_box | 1,000 |" in markdown, "both heads' faithfulness"
    assert "float32 trunk" in text and "bfloat16 trunk" in text and text.count("on 1,000 canvases") == 2
    assert {"model.keras", "metrics.json", "history.csv", "task.json", "predictions.png"} == {p.name for p in (tmp_path / "run").iterdir()}


def test_harder_canvases_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    papermill = pytest.importorskip("papermill")
    executed = tmp_path / "harder.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "harder_canvases.ipynb"),
        str(executed),  # never the committed notebook
        parameters={"EPOCHS": 1, "STEPS_PER_EPOCH": 5, "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "runs"), "CHECK_CANVASES": 100},
        cwd=str(ROOT / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    markdown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "(a) course task" in markdown and "(c) (b) + 4 fragments · mnist_loc" in markdown and "mean IoU, small" in markdown
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    assert text.count("train_seconds") == 4
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["sized-cluttered-course-lab", "sized-cluttered-mnist_loc", "sized-course-lab", "sized-mnist_loc"]
    assert "| sized-cluttered | mnist_loc |" in markdown, "the runs' table, read back from their folders"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2 + 2 * 3 + 1, "task samples, then per task: by size, predictions, worst cases; heatmaps of (c)'s worst"
    assert "| bounding_box | 100 |" in markdown and "inside the predicted box" in text, "faithfulness of both heads on (c)"


def test_your_own_model_notebook_runs_clean_with_small_parameters(mnist_dir, tmp_path):
    papermill = pytest.importorskip("papermill")
    executed = tmp_path / "own.ipynb"
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "your_own_model.ipynb"),
        str(executed),  # never the committed notebook
        parameters={"TASK_NAMES": ["cluttered-60"], "SEEDS": [0], "EPOCHS": 1, "STEPS_PER_EPOCH": 5,
                    "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "runs")},
        cwd=str(ROOT / "notebooks"),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = json.loads(executed.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    assert text.count("trained into") == 2 and "read back" not in text, "both models trained, nothing there to reuse"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["cluttered-60-course-seed0", "cluttered-60-glimpse-seed0"]
    markdown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "| cluttered-60 | mnist_loc | default (epochs=1, steps_per_epoch=5) | 1 |" in markdown
    assert "| cluttered-60 | glimpse | default (epochs=1, steps_per_epoch=5) | 1 |" in markdown, "the runs' table, from the folders"
    assert "| cluttered-60 | conv. 2 layers 8.09, RAM 4.04" in markdown, "the published errors beside ours"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 + 2 + 1, "the task's canvases, each model's worst cases, where both look"
    assert text.count("mass inside the true box") == 2 and "glimpse on these 8: class right" in text
    assert "glimpse on cluttered-60:" in text and "course on cluttered-60:" in text
