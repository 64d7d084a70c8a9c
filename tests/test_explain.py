"""Grad-CAM heatmaps and their faithfulness measures: hand-computed cases on a tiny model whose
maps are known, the course model's shapes, a subclassed model, the errors."""

import keras
import numpy as np
import pytest

from mnist_loc import explain
from mnist_loc.model import build_model

S = 4  # the tiny model's canvas


def tiny_model(class_sign=1.0):
    """4x4 canvas -> 1x1 convolution with weight 1 (its activations are the canvas) -> two heads.

    The classification head gives class 0 the pixel sum times ``class_sign`` and class 1 its
    negative; the box head weights pixel i by i + 1, scaled 1 : 2 : 3 : 4 from xmin to ymax (so
    boxes have area). So the gradient of
    either head with respect to the activations is constant in space, and Grad-CAM is the
    canvas itself divided by its maximum (for the class whose evidence is positive).
    """
    inputs = keras.Input((S, S, 1))
    conv = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="conv")(inputs)
    flat = keras.layers.Flatten()(conv)
    cls = keras.layers.Dense(2, activation="softmax", name="classification", kernel_initializer=keras.initializers.Constant(0.0))(flat)
    box = keras.layers.Dense(4, name="bounding_box", kernel_initializer="zeros")(flat)
    model = keras.Model(inputs, {"classification": cls, "bounding_box": box})
    model.get_layer("classification").kernel.assign(np.stack([np.full(S * S, class_sign), np.full(S * S, -class_sign)], 1).astype("float32"))
    pixel_weights = np.arange(1, S * S + 1, dtype="float32") / (S * S) ** 2
    model.get_layer("bounding_box").kernel.assign(np.outer(pixel_weights, [1.0, 2.0, 3.0, 4.0]).astype("float32"))
    return model


class TinySubclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")
        self.flat = keras.layers.Flatten()
        self.cls = keras.layers.Dense(2, activation="softmax")
        self.box = keras.layers.Dense(4)

    def call(self, x, training=False):
        f = self.flat(self.conv(x))
        return {"classification": self.cls(f), "bounding_box": self.box(f)}


def canvases(n=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 1.0, size=(n, S, S)).astype(np.float32)
    x[0, 0, 0] = 1.0
    return x


def test_grad_cam_of_the_tiny_model_is_the_canvas_over_its_maximum():
    model, x = tiny_model(), canvases()
    expected = x / x.max(axis=(1, 2), keepdims=True)
    for head in explain.HEADS:
        maps = explain.heatmaps(model, x, head)
        assert maps.shape == (3, S, S) and maps.dtype == np.float32
        np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-6, err_msg=head)


def test_a_class_with_only_negative_evidence_gets_an_empty_map():
    model, x = tiny_model(), canvases()
    assert (explain.heatmaps(model, x, "classification", class_index=1) == 0).all(), "ReLU keeps positive evidence only"
    np.testing.assert_allclose(explain.heatmaps(model, x, "classification", class_index=0), explain.heatmaps(model, x, "classification"), rtol=1e-6)


def test_box_maps_count_evidence_in_both_directions():
    # With the class sign flipped, class 1 is predicted; the box head is unchanged. A box weight of
    # the opposite sign moves every coordinate the other way: the box map (absolute) must not change.
    model, x = tiny_model(), canvases()
    before = explain.heatmaps(model, x, "bounding_box")
    layer = model.get_layer("bounding_box")
    layer.kernel.assign(-layer.kernel.numpy())
    np.testing.assert_allclose(explain.heatmaps(model, x, "bounding_box"), before, rtol=1e-6)


def test_subclassed_model_gives_the_same_maps_as_its_functional_twin():
    functional, x = tiny_model(), canvases()
    sub = TinySubclassed()
    sub(x[:1, ..., None])
    sub.cls.kernel.assign(functional.get_layer("classification").kernel.numpy())
    sub.box.kernel.assign(functional.get_layer("bounding_box").kernel.numpy())
    for head in explain.HEADS:
        np.testing.assert_allclose(explain.heatmaps(sub, x, head), explain.heatmaps(functional, x, head), rtol=1e-6)
    assert "call" not in vars(sub.conv), "the layer's call is restored after the pass"


def test_course_model_maps_are_canvas_sized_in_unit_range_and_deterministic():
    model = build_model()
    x = np.random.default_rng(0).uniform(0, 1, (5, 75, 75, 1)).astype(np.float32)
    assert explain.find_layer(model).name == "conv3"
    for head in explain.HEADS:
        first = explain.heatmaps(model, x, head, batch_size=2)  # batches of 2, 2 and 1
        assert first.shape == (5, 75, 75) and first.dtype == np.float32
        assert first.min() >= 0 and np.isclose(first.max(axis=(1, 2)), 1).all()
        assert first.tobytes() == explain.heatmaps(model, x, head, batch_size=2).tobytes()
        np.testing.assert_allclose(explain.heatmaps(model, x, head), first, atol=1e-5)  # one batch: other kernels, same maps
    early = explain.heatmaps(model, x, "classification", layer="conv1")
    assert early.shape == (5, 75, 75) and not np.allclose(early, explain.heatmaps(model, x, "classification"))


def test_clear_errors():
    x = canvases()
    inputs = keras.Input((S, S, 1))
    flat = keras.layers.Flatten()(inputs)
    no_conv = keras.Model(inputs, {"classification": keras.layers.Dense(2, activation="softmax")(flat), "bounding_box": keras.layers.Dense(4)(flat)})
    with pytest.raises(ValueError, match="no 2-D convolution"):
        explain.heatmaps(no_conv, x)
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        explain.heatmaps(tiny_model(), x, layer="conv9")
    with pytest.raises(ValueError, match="head must be one of"):
        explain.heatmaps(tiny_model(), x, head="box")
    with pytest.raises(ValueError, match="class_index applies to head='classification' only"):
        explain.heatmaps(tiny_model(), x, "bounding_box", class_index=1)
    with pytest.raises(ValueError, match=r"Grad-CAM needs \[B, h, w, channels\]"):
        explain.heatmaps(no_conv, x, layer=no_conv.layers[1].name)  # the Flatten layer
    with pytest.raises(ValueError, match="must be 4x4 canvases"):
        explain.heatmaps(tiny_model(), np.zeros((1, 5, 5), np.float32))


def test_mass_inside_by_hand():
    maps = np.zeros((2, S, S), np.float32)
    maps[0, 1, 1], maps[0, 2, 2], maps[0, 0, 3] = 2.0, 1.0, 1.0  # 3 of 4 inside [1, 1, 3, 3] px
    maps[1] = 1.0  # uniform: 4 of 16 pixels inside
    boxes = np.array([[1, 1, 3, 3], [1, 1, 3, 3]], np.float32) / S
    np.testing.assert_allclose(explain.mass_inside(maps, boxes), [0.75, 0.25])
    # Pixel centers decide: a box from 1.6 to 2.6 px holds only pixel 2's center (2.5) on each axis.
    np.testing.assert_allclose(explain.mass_inside(maps[1:], np.array([[1.6, 1.6, 2.6, 2.6]]) / S), [1 / 16])
    assert np.isnan(explain.mass_inside(np.zeros((1, S, S)), boxes[:1]))[0]
    with pytest.raises(ValueError, match="non-negative"):
        explain.mass_inside(-maps, boxes)


def test_rank_correlation_by_hand_with_ties():
    a = np.array([[[1, 1], [2, 3]]], np.float32)
    b = np.array([[[1, 2], [3, 4]]], np.float32)
    # ranks (ties averaged) [0.5, 0.5, 2, 3] and [0, 1, 2, 3]: 4.5 / sqrt(4.5 * 5)
    np.testing.assert_allclose(explain.rank_correlation(a, b), [4.5 / np.sqrt(22.5)], rtol=1e-6)
    np.testing.assert_allclose(explain.rank_correlation(b, -b), [-1.0])
    assert np.isnan(explain.rank_correlation(np.ones((1, 2, 2)), b))[0]


def test_deletion_of_the_top_pixels_hurts_more_than_random_box_pixels():
    # Class 0's probability grows with the pixel sum and the map ranks the brightest pixels
    # first: deleting them lowers it more than deleting as many random pixels of the box.
    model = tiny_model(class_sign=0.5)
    x = canvases(n=40, seed=1)
    boxes = np.tile(np.array([[0, 0, S, S]], np.float32) / S, (40, 1))
    maps = explain.heatmaps(model, x, "classification")
    result = explain.deletion(model, x, maps, boxes, "classification", fraction=0.25)
    assert result["num_examples"] == 40
    assert result["drop_top"] > result["drop_random"] > 0
    assert result["top_beats_random"] > 0.9
    same = explain.deletion(model, x, maps, boxes, "classification", fraction=0.25)
    assert same == result, "the random pixels come from the seed"
    assert result["ink_top"] == result["ink_random"] == 1.0, "every pixel of these canvases has ink"
    box = explain.deletion(model, x, explain.heatmaps(model, x, "bounding_box"), boxes, "bounding_box", fraction=0.25)
    assert box["score"] == pytest.approx(1.0) and 0 <= box["top"] <= 1
    x[:, 2:, :] = 0.0  # ink in the top half only: the map's top pixels are ink, half the box's are not
    half = explain.deletion(model, x, explain.heatmaps(model, x, "classification"), boxes, "classification", fraction=0.25)
    assert half["ink_top"] == 1.0 and 0.2 < half["ink_random"] < 0.8


def test_faithfulness_gathers_the_three_measures_on_one_set_of_maps_and_tabulates_them():
    # The tiny model's classification map is the canvas over its maximum, so the share inside
    # the left half of the canvas (pixel columns 0 and 1) is that half's share of the ink.
    model = tiny_model(class_sign=0.5)
    x = canvases(n=6, seed=2)
    boxes = np.tile(np.array([[0.0, 0.0, 0.5, 1.0]], np.float32), (6, 1))
    result = explain.faithfulness(model, x, boxes, "classification", fresh=tiny_model(class_sign=0.5))
    by_hand = (x[:, :, :2].sum((1, 2)) / x.sum((1, 2))).mean()
    assert result["mass_inside"] == pytest.approx(by_hand, abs=1e-6)
    assert result["box_area"] == 0.5 and result["num_examples"] == 6
    assert result["randomization"]["mean_rank_correlation"] == pytest.approx(1.0), "the same weights give the same maps"
    assert result["deletion"] == explain.deletion(model, x, explain.heatmaps(model, x, "classification"), boxes, "classification")
    table = explain.faithfulness_table({"classification": result}).splitlines()
    assert len(table) == 3 and table[2].startswith(f"| classification | 6 | {by_hand:.3f} | 0.500 |")
    assert "| top 10% deleted | random 10% of box deleted |" in table[0]
    other = explain.faithfulness(model, x, boxes, "classification", fraction=0.25, fresh=model)
    assert "| top 25% deleted | random 25% of box deleted |" in explain.faithfulness_table({"classification": other}).splitlines()[0]
    with pytest.raises(ValueError, match="different deletion fractions"):
        explain.faithfulness_table({"classification": result, "again": other})


def test_randomization_compares_with_fresh_weights():
    model = build_model()
    x = np.random.default_rng(0).uniform(0, 1, (4, 75, 75, 1)).astype(np.float32)
    same = explain.randomization(model, x, "classification", fresh=model)
    assert same["mean_rank_correlation"] == pytest.approx(1.0) and same["num_examples"] == 4
    other = explain.randomization(model, x, "classification")
    assert other["mean_rank_correlation"] < 0.99, "two random initializations give other maps"


def test_fresh_weights_are_the_same_for_a_seed_and_leave_global_random_state_alone():
    import random

    model = build_model(canvas_size=28)
    state, numpy_state = random.getstate(), np.random.get_state()
    a, b, c = explain.fresh_copy(model, seed=1), explain.fresh_copy(model, seed=1), explain.fresh_copy(model, seed=2)
    assert random.getstate() == state and np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    assert not np.array_equal(a.get_weights()[0], model.get_weights()[0])


def test_one_graph_function_per_model_and_head_and_the_model_is_not_kept_alive():
    import gc
    import weakref

    model, x = tiny_model(), canvases()
    for count in (3, 1, 2, 3):  # batches of other sizes, too
        explain.heatmaps(model, x[:count], "classification")
    explain.heatmaps(model, np.concatenate([x] * 3), "classification", batch_size=4)  # a short last batch
    (function,) = [f for key, f in explain._FUNCTIONS[model].items() if key[0] != "upsampling"]
    assert function.experimental_get_tracing_count() == 1
    ref = weakref.ref(model)
    del model, function
    gc.collect()
    assert ref() is None


def test_maps_sit_where_the_layer_looks():
    # 1x1 convolution: output pixel i sees canvas pixel i.
    tiny = tiny_model()
    rows, cols = explain.receptive_centers(tiny, explain.find_layer(tiny), S)
    np.testing.assert_allclose(rows, np.arange(S), atol=1e-6)
    np.testing.assert_allclose(cols, np.arange(S), atol=1e-6)
    # Course model, by hand: conv3 output k sees pool2 k..k+2 -> conv2 2k..2k+5 -> pool1 2k..2k+7
    # -> conv1 4k..4k+15 -> canvas pixels 4k..4k+17: centered on 4k + 8.5.
    for seed in (0, 1):  # whatever the weights
        keras.utils.set_random_seed(seed)
        model = build_model()
        rows, cols = explain.receptive_centers(model, explain.find_layer(model), 75)
        for centers in (rows, cols):
            np.testing.assert_array_equal(centers, 4 * np.arange(15) + 8.5)
