"""One table of many run folders, grouped by task x model x recipe, by hand."""

import json

from mnist_loc.config import TrainConfig
from mnist_loc.table import runs_table

from conftest import run_main


def fake_run(folder, task, model, recipe, seed, accuracy, mean_iou, at_50, seconds, cpu_seconds):
    folder.mkdir(parents=True)
    config = TrainConfig.for_task(task, seed=seed).to_dict()
    metrics = {"accuracy": accuracy, "mean_iou": mean_iou, "iou_at_50": at_50, "train_seconds": seconds,
               "train_cpu_seconds": cpu_seconds, "config": config, "model": {"name": model}, "recipe": recipe}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def fake_detection_run(folder, seed, ap, ap50, count_accuracy, fully_right, seconds, cpu_seconds):
    folder.mkdir(parents=True)
    metrics = {"ap": ap, "ap50": ap50, "count_accuracy": count_accuracy, "fully_right": fully_right, "train_seconds": seconds,
               "train_cpu_seconds": cpu_seconds, "config": TrainConfig.for_task("multi-mnist", seed=seed).to_dict(),
               "model": {"name": "mnist_loc_detector"}, "recipe": "default"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_runs_table_groups_by_task_model_recipe_with_mean_and_range(tmp_path, capsys):
    folders = [
        fake_run(tmp_path / "a0", "cluttered-60", "mnist_loc", "default", 0, 0.985, 0.93, 0.995, 260.0, 500.0),
        fake_run(tmp_path / "b", "translated-60", "tiny", "default (epochs=1)", 0, 0.5, 0.4, 0.3, 10.0, 17.0),
        fake_run(tmp_path / "a1", "cluttered-60", "mnist_loc", "default", 1, 0.989, 0.95, 0.999, 280.0, 540.0),
    ]
    table = runs_table(folders).splitlines()
    assert table[0] == ("| task | model | recipe | seeds | error % | accuracy | mean IoU | IoU ≥ 0.5 | AP | AP50 | count acc | "
                        "fully right | train s | CPU s |")
    # By hand: error 1.5 and 1.1 -> mean 1.3; accuracy 0.987; IoU 0.94; IoU >= 0.5 99.7%; 270 s; CPU 520 s.
    assert table[2] == ("| cluttered-60 | mnist_loc | default | 2 | 1.30 (1.10–1.50) | 0.9870 (0.9850–0.9890) | "
                        "0.9400 (0.9300–0.9500) | 99.70% (99.50%–99.90%) | – | – | – | – | 270 (260–280) | 520 (500–540) |")
    assert table[3] == "| translated-60 | tiny | default (epochs=1) | 1 | 50.00 | 0.5000 | 0.4000 | 30.00% | – | – | – | – | 10 | 17 |"
    assert len(table) == 4
    assert run_main(capsys, "table", *folders)[:2] == (0, "\n".join(table) + "\n")
    (tmp_path / "empty").mkdir()
    status, _, err = run_main(capsys, "table", tmp_path / "empty")
    assert status == 1 and err.strip() == f"mnist_loc: error: {tmp_path / 'empty'} is not a run folder (no metrics.json)"
    (tmp_path / "other" / "metrics.json").parent.mkdir()
    (tmp_path / "other" / "metrics.json").write_text('{"accuracy": 1}')
    status, _, err = run_main(capsys, "table", tmp_path / "other")
    assert status == 1 and "lacks train_seconds, train_cpu_seconds, config" in err
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    (tmp_path / "other" / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "mean_iou"}))
    status, _, err = run_main(capsys, "table", tmp_path / "other")
    assert status == 1 and err.strip().endswith("metrics.json lacks mean_iou: not written by mnist_loc's run()"), err


def test_runs_table_shows_detection_runs_beside_single_digit_runs(tmp_path):
    folders = [
        fake_run(tmp_path / "course", "course", "mnist_loc", "default", 0, 0.992, 0.951, 1.0, 142.0, 251.0),
        fake_detection_run(tmp_path / "m0", 0, 0.96, 0.99, 0.995, 0.990, 500.0, 900.0),
        fake_detection_run(tmp_path / "m1", 1, 0.98, 0.995, 0.997, 0.994, 520.0, 940.0),
    ]
    table = runs_table(folders).splitlines()
    assert table[2] == "| course | mnist_loc | default | 1 | 0.80 | 0.9920 | 0.9510 | 100.00% | – | – | – | – | 142 | 251 |"
    # By hand: AP 0.97 (0.96-0.98), AP50 0.9925, counted 99.60%, fully right 99.20%, 510 s, CPU 920 s.
    assert table[3] == ("| multi-mnist | mnist_loc_detector | default | 2 | – | – | – | – | 0.9700 (0.9600–0.9800) | "
                        "0.9925 (0.9900–0.9950) | 99.60% (99.50%–99.70%) | 99.20% (99.00%–99.40%) | 510 (500–520) | 920 (900–940) |")


def test_seed_table_rows_mean_and_per_class_by_hand(tmp_path):
    folders = [fake_detection_run(tmp_path / f"m{s}", s, ap, 0.99, 0.995, 0.99, 500.0 + 20 * s, 900.0) for s, ap in ((0, 0.96), (1, 0.98))]
    for folder, per_class, more in zip(folders, ({"0": 0.9, "1": 1.0}, {"0": 0.8, "1": None}), ({"ar20": 0.995}, {})):
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**metrics, "ap75": 0.97, "ar10": 0.99, "ap50_per_class": per_class, **more}))
    from mnist_loc.detection import seed_table

    lines = seed_table(folders).splitlines()
    assert lines[2] == "| seed 0 | 0.9600 | 0.9900 | 0.9700 | 0.9900 | 0.9950 | – | 99.50% | 99.00% | 500 | 900 |"
    assert lines[3].startswith("| seed 1 | 0.9800 | 0.9900 | 0.9700 | 0.9900 | – |"), "a run saved before AR@20 has none"
    assert "| 0.9900 (0.9900–0.9900) | – | – | 99" in lines[4], "no mean of a metric one run lacks"
    assert lines[4].startswith("| **mean of 2** | 0.9700 (0.9600–0.9800) | 0.9900 (0.9900–0.9900) |") and "510 (500–520)" in lines[4]
    assert lines[-1] == "| mean of 2 | 0.850 | – |", "(0.9 + 0.8) / 2; a class missing in one run has no mean"
