import keras
import numpy as np
import pytest

from mnist_loc.boxes import iou
from mnist_loc.model import BoxLoss, MeanBoxIoU, build_model, compile_model


def test_course_architecture_and_parameter_count():
    model = build_model()
    assert model.count_params() == 426_638
    kinds = [(type(l).__name__, getattr(l, "filters", None) or getattr(l, "units", None)) for l in model.layers]
    assert kinds[:9] == [
        ("InputLayer", None),
        ("Conv2D", 16), ("AveragePooling2D", None),
        ("Conv2D", 32), ("AveragePooling2D", None),
        ("Conv2D", 64), ("AveragePooling2D", None),
        ("Flatten", None), ("Dense", 128),
    ]
    heads = {l.name: (type(l).__name__, l.units) for l in model.layers[9:]}
    assert heads == {"classification": ("Dense", 10), "bounding_box": ("Dense", 4)}
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert all(l.kernel_size == (3, 3) and l.activation.__name__ == "relu" for l in convs)
    assert set(model.output_names) == {"classification", "bounding_box"}
    assert model.get_layer("classification").activation.__name__ == "softmax"
    assert model.get_layer("bounding_box").activation.__name__ == "linear"
    assert model.input_shape == (None, 75, 75, 1)
    out = model(np.zeros((2, 75, 75, 1), np.float32))
    assert out["classification"].shape == (2, 10) and out["bounding_box"].shape == (2, 4)


def test_mixed_precision_keeps_heads_float32():
    model = build_model(dtype_policy="mixed_bfloat16")
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    for name in ("dense", "classification", "bounding_box"):
        assert model.get_layer(name).compute_dtype == "float32"
    out = model(np.zeros((1, 75, 75, 1), np.float32))
    assert keras.backend.standardize_dtype(out["bounding_box"].dtype) == "float32"
    assert model.count_params() == 426_638


def test_bfloat16_trunk_only_where_the_hardware_has_it():
    from mnist_loc.model import cpu_has_bfloat16, native_bfloat16, trunk_policy

    zen3 = "flags\t\t: fpu vme sse4_2 avx avx2 fma bmi2 sha_ni\n"  # AVX2 only: bfloat16 emulated
    zen4 = "flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
    sapphire_rapids = "flags\t\t: avx512f avx512_fp16 amx_bf16 amx_tile amx_int8\n"
    assert [cpu_has_bfloat16(t) for t in (zen3, zen4, sapphire_rapids, "")] == [False, True, True, False]
    assert not cpu_has_bfloat16("flags : avx512bf16_like_but_not")
    assert trunk_policy(True) == "mixed_bfloat16" and trunk_policy(False) is None
    assert trunk_policy(None) == ("mixed_bfloat16" if native_bfloat16() else None)


def test_other_canvas_size():
    model = build_model(canvas_size=56)
    assert model.input_shape == (None, 56, 56, 1)


def test_compile_defaults_are_the_course_labs_recipe():
    model = compile_model(build_model())
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    assert model.loss == {"classification": "categorical_crossentropy", "bounding_box": "mse"}
    assert model.get_compile_config()["loss_weights"] == {"classification": 1.0, "bounding_box": 1.0}
    x = np.zeros((4, 75, 75, 1), np.float32)
    y = {"classification": np.eye(10, dtype=np.float32)[:4], "bounding_box": np.full((4, 4), 0.5, np.float32)}
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert {"classification_accuracy", "bounding_box_mse", "bounding_box_mean_iou", "classification_loss", "bounding_box_loss"} <= set(logs)
    # The composite loss is CCE + MSE at 1:1, computed from the model's own outputs.
    out = model.predict(x, verbose=0)
    cce = -np.mean(np.log(out["classification"][np.arange(4), np.arange(4)]))
    mse = np.mean((out["bounding_box"] - 0.5) ** 2)
    assert logs["classification_loss"] == pytest.approx(cce, rel=1e-4)
    assert logs["bounding_box_loss"] == pytest.approx(mse, rel=1e-4)
    assert logs["loss"] == pytest.approx(cce + mse, rel=1e-4)


def test_label_smoothing_and_weight_averaging_are_opt_in():
    plain = compile_model(build_model())
    assert not plain.optimizer.use_ema
    model = compile_model(build_model(), label_smoothing=0.1, ema_momentum=0.99)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.99)
    x = np.zeros((4, 75, 75, 1), np.float32)
    y = {"classification": np.eye(10, dtype=np.float32)[:4], "bounding_box": np.full((4, 4), 0.5, np.float32)}
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)["classification"]
    smoothed = 0.9 * y["classification"] + 0.1 / 10  # hand-computed targets
    assert logs["classification_loss"] == pytest.approx(-np.mean(np.sum(smoothed * np.log(p), axis=1)), rel=1e-4)
    for bad in ({"label_smoothing": 1.0}, {"ema_momentum": -0.1}, {"ema_momentum": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            compile_model(build_model(), **bad)


def test_unknown_box_loss():
    with pytest.raises(ValueError, match="unknown box loss"):
        compile_model(build_model(), box_loss="huber")


def test_mean_box_iou_metric_matches_numpy_iou():
    rng = np.random.default_rng(0)
    true = np.concatenate([rng.uniform(0, 0.5, (50, 2)), rng.uniform(0.5, 1, (50, 2))], axis=1).astype(np.float32)
    pred = (true + rng.normal(0, 0.05, true.shape)).astype(np.float32)
    metric = MeanBoxIoU()
    metric.update_state(true[:20], pred[:20])
    metric.update_state(true[20:], pred[20:])
    assert float(metric.result()) == pytest.approx(iou(pred, true).mean(), abs=1e-5)


def test_box_losses_hand_computed():
    true = np.array([[0.0, 0.0, 0.4, 0.4]], np.float32)
    pred = np.array([[0.1, 0.0, 0.5, 0.4]], np.float32)  # shifted by 0.1 in x
    assert float(BoxLoss("mse")(true, pred)) == pytest.approx((0.01 + 0.01) / 4, rel=1e-5)
    assert float(BoxLoss("l1")(true, pred)) == pytest.approx(0.2 / 4, rel=1e-5)
    expected_iou = (0.3 * 0.4) / (2 * 0.16 - 0.12)
    assert float(BoxLoss("iou_l1")(true, pred)) == pytest.approx(1 - expected_iou + 0.05, rel=1e-5)


def test_box_loss_round_trips_through_config():
    loss = BoxLoss("iou_l1")
    again = BoxLoss.from_config(loss.get_config())
    assert again.kind == "iou_l1"
