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
        parameters={"EPOCHS": 1, "STEPS_PER_EPOCH": 50, "DATA_DIR": mnist_dir, "OUT_DIR": str(tmp_path / "run")},
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
    assert len(images) >= 5, "sample canvases, history, predictions, histogram and worst cases are drawn"
    assert {"model.keras", "metrics.json", "history.csv"} <= {p.name for p in (tmp_path / "run").iterdir()}
