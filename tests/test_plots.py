import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mnist_loc.plots import draw_box, plot_canvases, plot_heatmaps, plot_history, plot_iou_histogram, plot_worst, worst_indices

S = 75


def test_draw_box_lands_on_pixel_edges():
    fig = Figure()
    ax = fig.subplots()
    ax.imshow(np.zeros((S, S)))
    patch = draw_box(ax, np.array([10, 20, 38, 48]) / S, S)
    # imshow centers pixel c at c, so pixel 10's left edge is at 9.5 and pixel 37's right edge at 37.5.
    assert patch.get_xy() == pytest.approx((9.5, 19.5))
    assert patch.get_width() == pytest.approx(28) and patch.get_height() == pytest.approx(28)
    assert patch.get_bbox().x1 == pytest.approx(37.5) and patch.get_bbox().y1 == pytest.approx(47.5)


def test_box_outline_encloses_exactly_the_digit_in_rendered_image():
    canvas = np.zeros((S, S))
    canvas[20:48, 10:38] = 1.0  # digit at x=10, y=20
    fig = Figure(figsize=(S / 10, S / 10), dpi=10 * 8)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    draw_box(ax, np.array([10, 20, 38, 48]) / S, S, color="red", linewidth=1)
    canvas_agg = FigureCanvasAgg(fig)
    canvas_agg.draw()
    rgb = np.asarray(canvas_agg.buffer_rgba())[..., :3].astype(int)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 80)
    ys, xs = np.nonzero(red)
    scale = rgb.shape[0] / S  # 8 screen px per canvas px
    assert xs.min() / scale == pytest.approx(10, abs=0.3) and (xs.max() + 1) / scale == pytest.approx(38, abs=0.3)
    assert ys.min() / scale == pytest.approx(20, abs=0.3) and (ys.max() + 1) / scale == pytest.approx(48, abs=0.3)


def test_canvases_grid_labels_and_colors():
    images = np.zeros((3, S, S, 1))
    boxes = np.tile([0.1, 0.1, 0.5, 0.5], (3, 1))
    fig = plot_canvases(images, boxes, boxes + 0.01, true_labels=[1, 2, 3], pred_labels=[1, 5, 3], ious=[0.9, 0.9, 0.4], ncols=3)
    axes = fig.axes
    assert len(axes) == 3
    assert all(sum(isinstance(p, Rectangle) for p in ax.patches) == 2 for ax in axes)
    colors = [ax.xaxis.label.get_color() for ax in axes]
    assert colors == ["black", "red", "red"]  # wrong label; IoU below 0.6
    assert axes[1].get_xlabel() == "pred 5\nIoU 0.90"


def test_history_histogram_and_worst():
    history = {"classification_loss": [1.0, 0.5], "val_classification_loss": [0.9, 0.6], "bounding_box_mean_iou": [0.5, 0.7]}
    fig = plot_history(history)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert len(fig.axes[0].lines) == 2
    hist = plot_iou_histogram(np.linspace(0, 1, 50))
    assert sum(bar.get_height() for bar in hist.axes[0].patches) == 50, "every IoU is counted in one bar"
    ious = np.array([0.9, 0.2, 0.95, 0.5])
    idx = worst_indices([1, 1, 2, 2], [1, 1, 3, 2], ious, n=3)
    assert idx.tolist() == [2, 1, 3]  # misclassified first, then by IoU
    fig = plot_worst(lambda i: np.zeros((len(i), S, S, 1)), np.zeros((4, 4)), np.zeros((4, 4)), [1, 1, 2, 2], [1, 1, 3, 2], ious, n=2)
    assert len([a for a in fig.axes if a.images]) == 2


def test_history_epochs_are_integers_and_histogram_thresholds_are_in_a_legend():
    fig = plot_history({"classification_accuracy": [0.5, 0.7, 0.8], "val_classification_accuracy": [0.6, 0.7, 0.9]})
    ax = fig.axes[1]
    FigureCanvasAgg(fig).draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    hist = plot_iou_histogram(np.array([0.4, 0.55, 0.7, 0.8]))
    labels = [t.get_text() for t in hist.axes[0].get_legend().get_texts()]
    assert labels == ["IoU ≥ 0.5: 75.00%", "IoU ≥ 0.6: 50.00%", "IoU ≥ 0.75: 25.00%"]
    assert not hist.axes[0].texts, "no labels drawn at the threshold lines"


def test_by_size_plot():
    from mnist_loc.plots import plot_by_size

    row = lambda n, a, m: {"count": n, "accuracy": a, "mean_iou": m, "iou_at_50": 1.0, "iou_at_75": 0.5}  # noqa: E731
    fig = plot_by_size({"by_size": {"small": row(10, 0.9, 0.7), "medium": row(20, 0.95, 0.8), "large": row(5, 1.0, 0.9)}})
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.9, 0.95, 1.0, 0.7, 0.8, 0.9])
    assert "10 digits" in ax.get_xticklabels()[0].get_text()
    with pytest.raises(ValueError, match="no by_size"):
        plot_by_size({"accuracy": 1.0})


def test_heatmaps_overlay_each_head_on_its_canvas_with_both_boxes():
    images = np.zeros((3, S, S, 1), np.float32)
    heat = np.random.default_rng(0).uniform(0, 1, (3, S, S)).astype(np.float32)
    boxes = np.tile(np.array([[10, 20, 38, 48]], np.float32) / S, (3, 1))
    fig = plot_heatmaps(images, {"classification": heat, "bounding_box": 1 - heat}, boxes, boxes + 0.01,
                        true_labels=[1, 2, 3], pred_labels=[1, 2, 7], ious=[0.9, 0.8, 0.1])
    axes = np.array(fig.axes).reshape(3, 3)  # rows: canvas, classification, bounding_box
    assert [len(ax.images) for ax in axes.ravel()] == [1, 1, 1, 2, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(axes[2, 1].images[1].get_array(), 1 - heat[1])
    assert all(sum(isinstance(p, Rectangle) for p in ax.patches) == 2 for ax in axes.ravel())
    assert axes[1, 0].get_ylabel().startswith("where it looks") and "pred 7" in axes[2, 2].get_xlabel()
    assert axes[2, 2].xaxis.label.get_color() == "red" and axes[2, 0].xaxis.label.get_color() == "black", "wrong label in red"
    with pytest.raises(ValueError, match=r"maps\['classification'\] has shape"):
        plot_heatmaps(images, {"classification": heat[:2]})
