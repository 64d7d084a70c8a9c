"""Figures for canvases, boxes, training curves, IoU and heatmaps.

Every function returns a ``matplotlib.figure.Figure`` (made without pyplot's global
state, so it works under any backend, headless included). Boxes are
``[xmin, ymin, xmax, ymax]`` normalized to the canvas: edges in continuous pixel
coordinates, so pixel column ``c`` spans ``[c, c + 1)``. ``imshow`` puts pixel
centers at integers, hence the half-pixel shift in :func:`draw_box`.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .boxes import SIZE_BUCKETS

TRUE_COLOR = "lime"
PRED_COLOR = "red"


def draw_box(ax, box, canvas_size: int, color: str = PRED_COLOR, linewidth: float = 1.5) -> Rectangle:
    """Draw one normalized box on an ``imshow`` axis of an ``S x S`` canvas; return the patch."""
    xmin, ymin, xmax, ymax = (float(v) * canvas_size for v in box)
    patch = Rectangle(
        (xmin - 0.5, ymin - 0.5), xmax - xmin, ymax - ymin, fill=False, edgecolor=color, linewidth=linewidth
    )
    ax.add_patch(patch)
    return patch


def plot_canvases(images, true_boxes=None, pred_boxes=None, *, true_labels=None, pred_labels=None, ious=None,
                  iou_threshold: float = 0.6, ncols: int = 10, title: str | None = None) -> Figure:
    """A grid of canvases with the true box (green) and the predicted box (red).

    Args:
      images: ``[N, S, S, 1]`` or ``[N, S, S]`` canvases.
      true_boxes, pred_boxes: optional ``[N, 4]`` normalized boxes.
      true_labels, pred_labels, ious: optional ``[N]``; under each canvas the
        predicted label (or the true one) and the IoU, in red when the label is
        wrong or the IoU is below ``iou_threshold``.
    """
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(1.6 * ncols, 1.9 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        _show(ax, images[i], None, true_boxes, pred_boxes, i)
        _caption(ax, i, true_labels, pred_labels, ious, iou_threshold)
    if title:
        fig.suptitle(title)
    return fig


def _show(ax, image, heat, true_boxes, pred_boxes, i) -> None:
    """One canvas on ``ax``, without ticks: a heatmap ``(map, alpha)`` over it if given, then
    box ``i`` of ``true_boxes`` (green) and of ``pred_boxes`` (red) where given."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
    if heat is not None:
        ax.imshow(heat[0], cmap="inferno", vmin=0.0, vmax=1.0, alpha=heat[1])
    for boxes, color in ((true_boxes, TRUE_COLOR), (pred_boxes, PRED_COLOR)):
        if boxes is not None:
            draw_box(ax, boxes[i], image.shape[0], color)


def _caption(ax, i, true_labels, pred_labels, ious, iou_threshold: float = 0.6) -> None:
    """Under canvas ``i``: the predicted label (or the true one) and the IoU, in red when
    the label is wrong or the IoU is below ``iou_threshold``."""
    parts, bad = [], False
    if pred_labels is not None:
        parts.append(f"pred {int(pred_labels[i])}")
        bad |= true_labels is not None and int(pred_labels[i]) != int(true_labels[i])
    elif true_labels is not None:
        parts.append(f"label {int(true_labels[i])}")
    if ious is not None:
        parts.append(f"IoU {float(ious[i]):.2f}")
        bad |= float(ious[i]) < iou_threshold
    if parts:
        ax.set_xlabel("\n".join(parts), color="red" if bad else "black", fontsize=9)


def plot_history(history: dict) -> Figure:
    """Training curves from ``{metric: [per-epoch values]}`` (Keras log names), train vs validation."""
    panels = [
        ("classification_loss", "classification loss"),
        ("classification_accuracy", "accuracy"),
        ("bounding_box_loss", "box loss"),
        ("bounding_box_mean_iou", "box mean IoU"),
    ]
    fig = Figure(figsize=(12, 3), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (key, label) in zip(axes, panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker=".", label="validation" if prefix else "train")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return fig


def plot_iou_histogram(ious, thresholds=(0.5, 0.6, 0.75)) -> Figure:
    """Histogram of per-example IoU with the report's thresholds marked."""
    ious = np.asarray(ious, dtype=float)
    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.hist(ious, bins=np.linspace(0, 1, 101), color="steelblue")
    ax.set_yscale("log")
    # Thresholds in a legend, not as text at the lines: 0.5 and 0.6 sit too close for labels.
    for t, style in zip(thresholds, (":", "--", "-.", (0, (1, 3)))):
        ax.axvline(t, color="dimgray", linestyle=style, label=f"IoU ≥ {t:g}: {np.mean(ious >= t):.2%}")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("IoU of predicted vs true box")
    ax.set_ylabel("test digits (log)")
    ax.set_title(f"IoU over {len(ious):,} test digits: mean {ious.mean():.3f}, median {np.median(ious):.3f}")
    return fig


def worst_indices(true_labels, pred_labels, ious, n: int = 10) -> np.ndarray:
    """Indices of the ``n`` worst predictions: misclassified first, then lowest IoU."""
    wrong = np.asarray(true_labels) != np.asarray(pred_labels)
    order = np.lexsort((np.asarray(ious), ~wrong))
    return order[:n]


def plot_worst(images, true_boxes, pred_boxes, true_labels, pred_labels, ious, n: int = 10, **kwargs) -> Figure:
    """Gallery of the ``n`` worst predictions (see :func:`worst_indices`).

    ``true_boxes`` … ``ious`` are full-length ``[N, ...]`` arrays; ``images`` is either
    the ``[N, S, S, 1]`` canvases or a function mapping an index array to those
    canvases (so the caller need not hold every canvas in memory).
    """
    idx = worst_indices(true_labels, pred_labels, ious, n)
    canvases = images(idx) if callable(images) else np.asarray(images)[idx]
    pick = lambda a: np.asarray(a)[idx]  # noqa: E731
    kwargs.setdefault("title", f"The {len(idx)} worst predictions (misclassified first, then lowest IoU)")
    return plot_canvases(
        canvases, pick(true_boxes), pick(pred_boxes), true_labels=pick(true_labels),
        pred_labels=pick(pred_labels), ious=pick(ious), **kwargs,
    )


def plot_by_size(report: dict) -> Figure:
    """Accuracy and mean IoU per size bucket of the true box (``report["by_size"]``, see
    :func:`mnist_loc.evaluation.evaluate`), with each bucket's count under its bars."""
    if "by_size" not in report:
        raise ValueError("the report has no by_size scores: every true box had the same size")
    rows = report["by_size"]
    names = [f"{name}\n{lo**0.5:.0f}-{hi**0.5:.0f} px\n{rows[name]['count']:,} digits".replace("-inf px", "+ px") for name, lo, hi in SIZE_BUCKETS]
    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "accuracy", "accuracy"), (0.2, "mean_iou", "mean IoU")):
        values = [rows[name][key] if rows[name][key] is not None else np.nan for name, _, _ in SIZE_BUCKETS]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.set_title("By size of the true box (side = sqrt of its area)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


HEAD_TITLES = {"classification": "where it looks to name the digit", "bounding_box": "where it looks to place the box"}


def plot_heatmaps(images, maps, true_boxes=None, pred_boxes=None, *, true_labels=None, pred_labels=None, ious=None,
                  alpha: float = 0.55, title: str | None = None) -> Figure:
    """Heatmaps over their canvases, with the true box (green) and the predicted box (red).

    Args:
      images: ``[N, S, S, 1]`` or ``[N, S, S]`` canvases in [0, 1].
      maps: ``[N, S, S]`` in [0, 1] (:func:`mnist_loc.explain.heatmaps`), or a dict of
        them by head name: one row per entry, under a first row with the plain canvases.
      true_boxes, pred_boxes: optional ``[N, 4]`` normalized boxes, drawn on every row.
      true_labels, pred_labels, ious: optional ``[N]``, written under the canvases as in
        :func:`plot_canvases`.
    """
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    maps = dict(maps) if isinstance(maps, dict) else {"heatmap": maps}
    n = len(images)
    for name, heat in maps.items():
        if np.shape(heat) != images.shape:
            raise ValueError(f"maps[{name!r}] has shape {np.shape(heat)}, the canvases {images.shape}")
    rows = 1 + len(maps)
    fig = Figure(figsize=(1.6 * n + 1.2, 1.7 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False)
    for row, (name, heat) in enumerate([("canvas", None), *maps.items()]):
        for i in range(n):
            _show(axes[row, i], images[i], None if heat is None else (np.asarray(heat[i]), alpha), true_boxes, pred_boxes, i)
        label = HEAD_TITLES.get(name, name)
        axes[row, 0].set_ylabel(label if len(label) < 16 else label.replace(" to ", "\nto "), fontsize=8)
    for i in range(n):
        _caption(axes[-1, i], i, true_labels, pred_labels, ious)
    if title:
        fig.suptitle(title)
    return fig


def plot_detections(images, true_labels, true_boxes, predictions: dict | None = None, threshold: float = 0.5, *, ncols: int = 10,
                    class_names=None, captions=None, title: str | None = None, panel: float = 1.8) -> Figure:
    """A grid of canvases with every true digit's box (green) and every detection scoring at
    least ``threshold`` (red, labelled ``class score``).

    ``images`` ``[N, S, S, 1]``; ``true_labels`` int ``[N, K]`` (-1: none) and ``true_boxes``
    ``[N, K, 4]``, or None; ``predictions``: ``{"boxes" [N, M, 4], "labels" [N, M], "scores"
    [N, M]}`` as :func:`mnist_loc.evaluation.predict` gives them, or None (the true boxes
    alone, captioned with their digits). ``captions``: optional
    text under each canvas (default: the true digits, then what was counted). ``panel``: inches
    per canvas (larger for crowded canvases).
    """
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    n, size = len(images), images.shape[1]
    name = (lambda c: str(class_names[c])) if class_names is not None else str
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig = Figure(figsize=(panel * ncols, (panel + 0.2) * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
        truth = [] if true_labels is None else [(int(c), b) for c, b in zip(true_labels[i], true_boxes[i]) if c >= 0]
        for _, box in truth:
            draw_box(ax, box, size, TRUE_COLOR, 1.0)
        found = [] if predictions is None else [
            (int(c), b, s) for c, b, s in zip(predictions["labels"][i], predictions["boxes"][i], predictions["scores"][i])
            if c >= 0 and s >= threshold]
        for label, box, score in found:
            draw_box(ax, box, size, PRED_COLOR, 1.0)
            ax.text(float(box[0]) * size - 0.5, float(box[1]) * size - 1, f"{name(label)} {score:.2f}", color=PRED_COLOR,
                    fontsize=6, va="bottom")
        if captions is not None:
            ax.set_title(captions[i], fontsize=7)
        elif predictions is None:
            ax.set_title(" ".join(name(c) for c, _ in truth) or "-", fontsize=7)
        else:
            true_text = " ".join(name(c) for c, _ in sorted(truth, key=lambda t: t[0])) or "-"
            found_text = " ".join(name(c) for c, _, _ in sorted(found, key=lambda t: t[0])) or "-"
            ax.set_title(f"{true_text} | {found_text}", fontsize=7, color="black" if true_text == found_text else PRED_COLOR)
    if title:
        fig.suptitle(title)
    return fig


def plot_detection_curve(points, budget_seconds: float = 600.0, title: str = "validation canvases") -> Figure:
    """Validation AP@[.50:.95], AP50 and count accuracy against training seconds.

    ``points``: dicts with ``train_seconds``, ``ap``, ``ap50``, ``count_accuracy`` (one per
    run, e.g. runs of 2, 4, 8, ... passes); a dashed line marks ``budget_seconds``.
    """
    points = sorted(points, key=lambda p: p["train_seconds"])
    seconds = [p["train_seconds"] for p in points]
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, keys in ((left, ("ap", "ap50")), (right, ("count_accuracy", "fully_right"))):
        for key in keys:
            if all(key in p for p in points):
                ax.plot(seconds, [p[key] for p in points], marker="o", label=key.replace("_", " "))
        ax.axvline(budget_seconds, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel("training seconds")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    left.set_title("COCO AP", fontsize=9)
    right.set_title("counting", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig
