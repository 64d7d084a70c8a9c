"""Explain a prediction: Grad-CAM heatmaps of where a model looks, and how faithful they are.

Grad-CAM (Selvaraju et al. 2017) for either head of any Keras model with the two outputs,
functional or subclassed (the convolution's output is caught while the model runs): for
``"classification"`` the predicted class's probability (ReLU of the map), for ``"bounding_box"``
the mean of the four coordinates' maps, each the absolute value (a coordinate is pushed both
ways). Faithfulness is measured, not assumed: :func:`mass_inside`, :func:`deletion` and
:func:`randomization` (Adebayo et al. 2018). The method and its choices: docs/explain.md.
"""

from __future__ import annotations

import random
import weakref

import keras
import numpy as np
import tensorflow as tf

from .boxes import iou
from .evaluation import predict
from .inference import model_canvas_size, model_canvases, output_shapes

HEADS = ("classification", "bounding_box")
CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def _sublayers(layer):
    for child in getattr(layer, "layers", ()) or ():
        yield child
        yield from _sublayers(child)


def find_layer(model: keras.Model, layer=None) -> keras.layers.Layer:
    """The layer Grad-CAM reads: ``layer`` (a name or a layer of ``model``), by default the
    model's last 2-D convolution (searched through nested models' ``layers``). Raises
    ValueError when there is none or the name is unknown."""
    layers = list(_sublayers(model))
    if isinstance(layer, keras.layers.Layer):
        return layer
    if isinstance(layer, str):
        for candidate in layers:
            if candidate.name == layer:
                return candidate
        raise ValueError(f"model {model.name!r} has no layer named {layer!r}; its layers: {', '.join(l.name for l in layers)}")
    if layer is not None:
        raise TypeError(f"layer must be a layer name or a keras layer, got {type(layer).__name__}")
    convolutions = [candidate for candidate in layers if isinstance(candidate, CONVOLUTIONS)]
    if not convolutions:
        raise ValueError(
            f"model {model.name!r} has no 2-D convolution for Grad-CAM to read; pass layer= the name of a layer with "
            "[B, h, w, channels] outputs")
    return convolutions[-1]


def _run_catching(model, layer, images):
    """``model(images)`` and what ``layer`` returned during that call.

    Caught while the model runs, not asked of a functional sub-model (``keras.Model(inputs,
    layer.output)``, keras-io's Grad-CAM): a subclassed model has no symbolic layer outputs,
    and one way serves both kinds."""
    caught = []
    original = layer.call

    def call(*args, **kwargs):
        out = original(*args, **kwargs)
        caught.append(out)
        return out

    layer.call = call  # this instance only, for this one call
    try:
        outputs = model(images, training=False)
    finally:
        del layer.call
    if not caught:
        raise ValueError(f"layer {layer.name!r} did not run when the model ran")
    activations = caught[-1]
    if len(activations.shape) != 4:
        raise ValueError(f"layer {layer.name!r} returns shape {tuple(activations.shape)}; Grad-CAM needs [B, h, w, channels]")
    return outputs, activations


def _cam(activations, gradients, absolute: bool):
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # [B, 1, 1, K]
    cam = tf.reduce_sum(weights * activations, axis=-1)  # [B, h, w]
    return tf.abs(cam) if absolute else tf.nn.relu(cam)


def _unit(maps):
    """Scale each map to [0, 1] by its maximum; an all-zero map stays zero."""
    top = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(maps, top)


# One graph function per (model, layer, head, class), kept while the model lives: eager
# Grad-CAM ran several times slower than predict.
_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _function(model, layer, head, class_index, size):
    functions = _FUNCTIONS.setdefault(model, {})
    key = (id(layer), head, class_index, size)
    if key not in functions:
        placement = ("upsampling", id(layer), size)  # the same for every head
        if placement not in functions:
            functions[placement] = tuple(tf.constant(m) for m in upsampling(model, layer, size))
        rows, cols = functions[placement]
        model_ref, layer_ref = weakref.ref(model), weakref.ref(layer)  # weak: the cache must not keep them alive
        # Any batch size, one trace: TensorFlow counts traces per source line, over every model's
        # function, and warns of "retracing" when a notebook explains 8 canvases, then 1,000.
        signature = [tf.TensorSpec([None, size, size, 1], tf.float32)]
        functions[key] = tf.function(lambda x: _maps(model_ref(), layer_ref(), x, head, class_index, rows, cols), autograph=False, input_signature=signature)
    return functions[key]


def receptive_centers(model: keras.Model, layer, size: int, probes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Where each row and column of ``layer``'s output looks on an ``S x S`` canvas: the
    centers (in pixel indices, float64 ``[h]`` and ``[w]``) of their receptive fields, the
    middle of the input pixels with a non-zero gradient on random canvases.

    A layer after unpadded convolutions does not cover the canvas edge to edge: the course
    model's last convolution (15 x 15) looks at pixels 8.5 to 64.5 of 75, so stretching its
    map over the whole canvas would misplace it by up to 8 pixels."""
    probe = np.random.default_rng(0).uniform(0, 1, (probes, size, size, 1)).astype(np.float32)
    _, caught = _run_catching(model, layer, tf.constant(probe[:1]))
    h, w = int(caught.shape[1]), int(caught.shape[2])
    # One copy of the probes per output row and column, each scoring only its own row (column):
    # one backward pass gives every copy the gradient of its row (column) alone.
    x = tf.constant(np.repeat(probe, h + w, axis=0))  # [probes * (h + w), S, S, 1]: probe p, line l at p * (h + w) + l
    select = np.zeros((h + w, h, w, 1), np.float32)
    for i in range(h):
        select[i, i] = 1.0
    for j in range(w):
        select[h + j, :, j] = 1.0
    select = tf.constant(np.tile(select, (probes, 1, 1, 1)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, caught = _run_catching(model, layer, x)
        total = tf.reduce_sum(tf.cast(caught, tf.float32) * select)
    gradient = tape.gradient(total, x)
    weight = np.zeros((h + w, size, size)) if gradient is None else np.abs(gradient.numpy()[..., 0]).reshape(probes, h + w, size, size).sum(0)
    positions = np.arange(size, dtype=np.float64)

    def middle(profile):
        # The middle of what the row (column) sees at all: a gradient-weighted mean would follow
        # the weights' asymmetry (up to 2 px off for fresh weights) rather than the geometry.
        seen = positions[profile > 1e-9 * profile.max()] if profile.max() > 0 else positions[:0]
        return (seen.min() + seen.max()) / 2 if len(seen) else np.nan

    rows = np.array([middle(weight[i].sum(axis=1)) for i in range(h)])
    cols = np.array([middle(weight[h + j].sum(axis=0)) for j in range(w)])
    return rows, cols


def _interpolation(centers: np.ndarray, size: int) -> np.ndarray:
    """``[S, n]``: linear interpolation from values at ``centers`` to every pixel (the edge
    values held beyond the first and last center)."""
    n = len(centers)
    if n == 1 or not np.all(np.isfinite(centers)) or not np.all(np.diff(centers) > 0):
        centers = (np.arange(n) + 0.5) * size / n - 0.5  # spread evenly: what an image resize assumes
    t = np.interp(np.arange(size, dtype=np.float64), centers, np.arange(n, dtype=np.float64))
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, n - 1)
    matrix = np.zeros((size, n), np.float32)
    matrix[np.arange(size), low] += (1 - (t - low)).astype(np.float32)
    matrix[np.arange(size), high] += (t - low).astype(np.float32)
    return matrix


def upsampling(model: keras.Model, layer, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrices ``R [S, h]`` and ``C [S, w]`` that put a ``[h, w]`` map of ``layer`` on the
    ``S x S`` canvas (``R @ map @ C.T``), each row and column at the center of what it sees
    (:func:`receptive_centers`)."""
    rows, cols = receptive_centers(model, find_layer(model, layer), size)
    return _interpolation(rows, size), _interpolation(cols, size)


def _maps(model, layer, x, head, class_index, rows, cols):
    with tf.GradientTape(persistent=head == "bounding_box") as tape:
        outputs, caught = _run_catching(model, layer, x)
        if head == "classification":
            probabilities = tf.cast(outputs["classification"], tf.float32)
            chosen = tf.argmax(probabilities, -1) if class_index is None else tf.fill([tf.shape(x)[0]], tf.constant(class_index, tf.int64))
            scores = [tf.gather(probabilities, chosen, axis=1, batch_dims=1)]
        else:
            boxes = tf.cast(outputs["bounding_box"], tf.float32)
            scores = [boxes[:, c] for c in range(4)]
        # Each canvas's score depends on its own activations only: the gradient of the batch's
        # sum gives every canvas its own gradient in one pass.
        totals = [tf.reduce_sum(score) for score in scores]
    # Gradients with respect to the tensor the model used: a cast copy would be off its path.
    activations = tf.cast(caught, tf.float32)
    maps = [_cam(activations, tf.cast(tape.gradient(total, caught), tf.float32), absolute=head == "bounding_box") for total in totals]
    del tape
    if head == "bounding_box":
        maps = [_unit(m) for m in maps]
    cam = tf.add_n(maps) / len(maps)
    cam = tf.einsum("sh,bhw,tw->bst", rows, cam, cols)
    return tf.clip_by_value(_unit(cam), 0.0, 1.0)


def heatmaps(model: keras.Model, images, head: str = "classification", *, class_index: int | None = None, layer=None, batch_size: int = 250) -> np.ndarray:
    """Grad-CAM heatmaps of ``head`` for canvases: float32 ``[B, S, S]`` in [0, 1] (1 where
    the evidence is strongest; an all-zero map where the score has no gradient).

    Args:
      model: a Keras model whose outputs are a dict with ``classification`` (probabilities
        ``[B, C]``) and ``bounding_box`` (``[B, 4]``, normalized ``[xmin, ymin, xmax, ymax]``).
      images: canvases as :func:`mnist_loc.inference.check_images` accepts them (float32 in
        [0, 1] or uint8; ``[S, S]``, ``[B, S, S]`` or ``[B, S, S, 1]``).
      head: ``"classification"`` or ``"bounding_box"`` (see the module's docstring for the
        score each explains and why).
      class_index: classification only: explain this class instead of the predicted one.
      layer: the layer to read (a name or layer); default the last 2-D convolution.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if class_index is not None and head != "classification":
        raise ValueError("class_index applies to head='classification' only")
    canvases = model_canvases(model, images)
    outputs = output_shapes(model, canvases.shape[1])
    if not (isinstance(outputs, dict) and set(HEADS) <= set(outputs)):
        raise ValueError(f"Grad-CAM explains the two heads {HEADS}; this model's outputs are {sorted(outputs) if isinstance(outputs, dict) else outputs}")
    target = find_layer(model, layer)
    function = _function(model, target, head, class_index, canvases.shape[1])
    parts = [function(tf.constant(canvases[i: i + batch_size])).numpy() for i in range(0, len(canvases), batch_size)]
    return np.concatenate(parts).astype(np.float32)


def _inside(boxes, size: int) -> np.ndarray:
    """Boolean ``[B, S, S]``: the pixels whose centers lie in each normalized box."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    centers = (np.arange(size, dtype=np.float32) + 0.5) / size
    in_x = (centers >= boxes[:, 0:1]) & (centers <= boxes[:, 2:3])  # [B, S] over columns
    in_y = (centers >= boxes[:, 1:2]) & (centers <= boxes[:, 3:4])  # [B, S] over rows
    return in_y[:, :, None] & in_x[:, None, :]


def mass_inside(maps, boxes) -> np.ndarray:
    """The share of each heatmap's mass inside its box: float32 ``[B]`` in [0, 1].

    ``maps``: ``[B, S, S]`` non-negative; ``boxes``: ``[B, 4]`` normalized ``[xmin, ymin,
    xmax, ymax]``; a pixel counts as inside when its center is. An all-zero map has no
    mass: NaN."""
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"maps must be [B, S, S], got shape {maps.shape}")
    if np.any(maps < 0):
        raise ValueError("maps must be non-negative")
    inside = _inside(boxes, maps.shape[1])
    if len(inside) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(inside)} boxes")
    total = maps.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((maps * inside).sum(axis=(1, 2)) / total).astype(np.float32)


def _scores(model, canvases, head, reference, canvas_size):
    return _score(predict(model, canvases, canvas_size=canvas_size), head, reference)


def _score(pred, head, reference):
    if head == "classification":
        return pred["probabilities"][np.arange(len(reference)), reference]
    return iou(pred["boxes"], reference)


def deletion(model: keras.Model, images, maps, boxes, head: str = "classification", *, fraction: float = 0.1, seed: int = 0) -> dict:
    """Does zeroing what a heatmap ranks highest hurt the explained score more than zeroing
    as many random pixels of the box?

    For each canvas, ``k = round(fraction * pixels in its box)`` (at least 1): the top-``k``
    pixels of its map are set to 0, and, separately, ``k`` pixels drawn at random (``seed``)
    inside ``boxes``. The score is the probability of the class predicted on the intact
    canvas (``classification``), or the IoU of the new box with the box predicted on the
    intact canvas (``bounding_box``); both are 1-ish before deletion for a confident model.

    Returns ``{"score": mean score intact, "top": mean score after deleting the top pixels,
    "random": ... after deleting random box pixels, "drop_top", "drop_random": the mean
    drops, "top_beats_random": share of canvases where the top pixels' drop is larger,
    "ink_top", "ink_random": the mean share of the deleted pixels that had ink (> 0), which
    says how strong the random baseline is (a tight box is mostly ink), "num_examples",
    "fraction"}``.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    canvases = model_canvases(model, images)[..., 0]
    size = canvases.shape[1]
    maps = np.asarray(maps, np.float32)
    if maps.shape != canvases.shape:
        raise ValueError(f"maps have shape {maps.shape}, canvases {canvases.shape}")
    inside = _inside(boxes, canvases.shape[1]).reshape(len(canvases), -1)
    pred = predict(model, canvases[..., None], canvas_size=size)
    reference = pred["labels"] if head == "classification" else pred["boxes"]
    rng = np.random.default_rng(seed)
    flat = canvases.reshape(len(canvases), -1)
    top, random = flat.copy(), flat.copy()
    ink_top, ink_random = np.zeros(len(canvases)), np.full(len(canvases), np.nan)
    for i in range(len(canvases)):
        in_box = np.flatnonzero(inside[i])
        k = max(1, int(round(fraction * len(in_box))))
        # A stable sort: ties (flat regions of the map) are broken by pixel order, reproducibly.
        chosen = np.argsort(-maps[i].ravel(), kind="stable")[:k]
        top[i, chosen] = 0.0
        ink_top[i] = (flat[i, chosen] > 0).mean()
        if len(in_box):
            chosen = rng.choice(in_box, size=k, replace=False)
            random[i, chosen] = 0.0
            ink_random[i] = (flat[i, chosen] > 0).mean()
    shape = canvases.shape + (1,)
    intact = _score(pred, head, reference)
    after_top = _scores(model, top.reshape(shape), head, reference, size)
    after_random = _scores(model, random.reshape(shape), head, reference, size)
    drop_top, drop_random = intact - after_top, intact - after_random
    return {
        "score": float(intact.mean()), "top": float(after_top.mean()), "random": float(after_random.mean()),
        "drop_top": float(drop_top.mean()), "drop_random": float(drop_random.mean()),
        "top_beats_random": float((drop_top > drop_random).mean()), "num_examples": len(canvases), "fraction": float(fraction),
        "ink_top": float(ink_top.mean()), "ink_random": float(np.nanmean(ink_random)) if np.isfinite(ink_random).any() else float("nan"),
    }


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end - 1) / 2.0
    return ranks


def rank_correlation(a, b) -> np.ndarray:
    """Spearman's rank correlation between paired maps, ``[B, S, S]`` each: float32 ``[B]``
    (NaN where a map is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps have shapes {a.shape} and {b.shape}")
    out = np.empty(len(a), np.float32)
    for i in range(len(a)):
        ra, rb = _ranks(a[i].ravel()), _ranks(b[i].ravel())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
        out[i] = (ra * rb).sum() / denominator if denominator > 0 else np.nan
    return out


def fresh_copy(model: keras.Model, seed: int = 1) -> keras.Model:
    """The same architecture with newly initialized weights (``keras.models.clone_model``;
    a subclassed model needs ``get_config``/``from_config``, as saving it does), the same
    for the same ``seed``. Keras' initializers draw their seeds from Python's ``random``,
    which is seeded for the clone and restored after it: no global state changes."""
    state = random.getstate()
    random.seed(seed)
    try:
        fresh = keras.models.clone_model(model)
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(f"cannot rebuild {model.name!r} with fresh weights ({error}); pass fresh= a new instance") from None
    finally:
        random.setstate(state)
    size = model_canvas_size(model)
    if size is not None and not fresh.built:
        fresh(np.zeros((1, size, size, 1), np.float32))
    return fresh


def randomization(model: keras.Model, images, head: str = "classification", *, fresh: keras.Model | None = None, layer=None, maps=None) -> dict:
    """The model-randomization sanity check: heatmaps of ``model`` against those of the same
    architecture with fresh weights (``fresh``, default :func:`fresh_copy`). A faithful
    explanation depends on what the model learned, so the two should differ: a mean rank
    correlation near 1 means the map only traces the input (e.g. its ink).

    ``maps``: the model's heatmaps of ``images`` for ``head`` and ``layer`` when already made.
    Returns ``{"mean_rank_correlation", "median_rank_correlation", "num_examples"}`` over
    the canvases whose maps are not constant."""
    fresh = fresh or fresh_copy(model)
    layer_name = find_layer(model, layer).name
    maps = heatmaps(model, images, head, layer=layer_name) if maps is None else maps
    rho = rank_correlation(maps, heatmaps(fresh, images, head, layer=layer_name))
    rho = rho[np.isfinite(rho)]
    return {"mean_rank_correlation": float(rho.mean()) if len(rho) else float("nan"),
            "median_rank_correlation": float(np.median(rho)) if len(rho) else float("nan"), "num_examples": int(len(rho))}


def faithfulness(model: keras.Model, images, boxes, head: str = "classification", *, fraction: float = 0.1, seed: int = 0, fresh: keras.Model | None = None) -> dict:
    """The three measures for one head on canvases with their true boxes (``[B, 4]``,
    normalized): ``mass_inside`` (mean share of a map inside the true box) with
    ``box_area`` (the mean share of the canvas the box covers: what a uniform map would
    score), ``outside`` (outside the box: the median map value and the share of the mass
    there in faint pixels, below 0.2), ``deletion`` (:func:`deletion` at ``fraction``) and
    ``randomization`` (:func:`randomization`). The maps are made once for all three."""
    maps = heatmaps(model, images, head)
    inside_box = _inside(boxes, maps.shape[1])
    outside = maps[~inside_box]
    return {
        "head": head, "num_examples": len(maps),
        "mass_inside": float(np.nanmean(mass_inside(maps, boxes))), "box_area": float(inside_box.mean()),
        "outside": {"median": float(np.median(outside)), "faint_share": float(outside[outside < 0.2].sum() / outside.sum())},
        "deletion": deletion(model, images, maps, boxes, head, fraction=fraction, seed=seed),
        "randomization": randomization(model, images, head, fresh=fresh, maps=maps),
    }


def faithfulness_table(results: dict) -> str:
    """A Markdown table of :func:`faithfulness` results, one row per head
    (``{head: result}``): mass inside the true box against the box's area, the deletion
    check's scores and win rate, and the rank correlation with fresh weights. The results
    must share one deletion fraction (it names two columns)."""
    fractions = {r["deletion"]["fraction"] for r in results.values()}
    if len(fractions) != 1:
        raise ValueError(f"the results were measured with different deletion fractions {sorted(fractions)}; tabulate them apart")
    f = f"{fractions.pop():.0%}"
    lines = [f"| head | canvases | mass inside true box | box area | score intact | top {f} deleted | random {f} of box deleted | top hurts more | rank corr. with fresh weights |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for head, r in results.items():
        d = r["deletion"]
        lines.append(f"| {head} | {r['num_examples']:,} | {r['mass_inside']:.3f} | {r['box_area']:.3f} | {d['score']:.3f} | "
                     f"{d['top']:.3f} | {d['random']:.3f} | {d['top_beats_random']:.1%} | {r['randomization']['mean_rank_correlation']:.3f} |")
    return "\n".join(lines)
