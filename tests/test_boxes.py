import numpy as np
import pytest

from mnist_loc.boxes import iou


# Hand-computed cases, in pixel units: (pred, true, expected IoU).
CASES = [
    ("partial overlap", [0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),  # inter 1, union 4 + 4 - 1
    ("containment", [0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),
    ("disjoint", [0, 0, 1, 1], [2, 2, 3, 3], 0.0),
    ("touching edges", [0, 0, 1, 1], [1, 0, 2, 1], 0.0),
    ("identical", [10, 20, 38, 48], [10, 20, 38, 48], 1.0),
    ("shifted 28px box", [0, 0, 28, 28], [1, 0, 29, 28], 27 * 28 / (2 * 784 - 27 * 28)),
    ("zero-area vs box", [1, 1, 1, 3], [0, 0, 2, 2], 0.0),
    ("both zero-area, identical", [1, 1, 1, 1], [1, 1, 1, 1], 0.0),
    ("inverted pred counts as empty", [3, 3, 1, 1], [0, 0, 4, 4], 0.0),
    ("inverted in y only", [0, 2, 2, 0], [0, 0, 2, 2], 0.0),
]


@pytest.mark.parametrize("name,pred,true,expected", CASES, ids=[c[0] for c in CASES])
def test_hand_computed_cases(name, pred, true, expected):
    assert iou(pred, true) == pytest.approx(expected, abs=1e-12)


def test_batch_matches_cases_and_has_shape_n():
    pred = np.array([c[1] for c in CASES], float)
    true = np.array([c[2] for c in CASES], float)
    result = iou(pred, true)
    assert result.shape == (len(CASES),)
    np.testing.assert_allclose(result, [c[3] for c in CASES], atol=1e-12)
    assert not np.isnan(result).any()


def test_scalar_for_single_boxes():
    assert isinstance(iou([0, 0, 1, 1], [0, 0, 1, 1]), float)


def test_unit_free_normalized_equals_pixels():
    pred, true = np.array([[5.0, 7, 33, 35]]), np.array([[6.0, 5, 34, 33]])
    np.testing.assert_allclose(iou(np.asarray(pred) / 75, np.asarray(true) / 75), iou(pred, true))


@pytest.mark.parametrize(
    "pred,true,match",
    [
        ([0, 0, 1], [0, 0, 1, 1], "shape"),
        ([[0, 0, 1, 1]], [0, 0, 1, 1], "same shape"),
        ([0, np.nan, 1, 1], [0, 0, 1, 1], "NaN"),
        ([0, 0, np.inf, 1], [0, 0, 1, 1], "NaN or infinite"),
        (3.0, [0, 0, 1, 1], "shape"),
    ],
)
def test_bad_boxes_raise(pred, true, match):
    with pytest.raises(ValueError, match=match):
        iou(pred, true)


def test_non_numeric_boxes_raise_type_error():
    with pytest.raises(TypeError, match="numeric"):
        iou(["a", "b", "c", "d"], [0, 0, 1, 1])
