"""How one canvas is drawn: digits resized, pasted, boxed and cluttered, as batched tensor ops.

A 28x28 digit is resized to an ``s x s`` patch by area resampling, written as the two batched
matmuls that paste it (interpolation weights instead of one-hot shifts: about 4x cheaper than a
scatter, exact at ``s = 28``), at an integer offset on a black ``S x S`` canvas. Boxes are
``[xmin, ymin, xmax, ymax]`` in continuous pixel coordinates normalized by ``S`` (pixel column
``c`` spans ``[c, c + 1)``): ``"patch"``, the pasted square, or ``"ink"``, the tightest box around
pixels ``>= INK_THRESHOLD``. Each task's rules: docs/testbed.md. Every random choice is drawn
with stateless ops keyed by ``(seed, split, pass)`` and indexed by the example's position, so a
canvas depends on nothing but those numbers and the task. Knows nothing of where digits come from.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .boxes import iou_tensor
from .task import BOX_DEFINITIONS, DETECTION_MAX_IOU, DETECTION_SIDES, DIGIT_SIZE, Task, check_canvas_size

INK_THRESHOLD = 0.1  # a canvas pixel is ink at >= 10% of full intensity (25.5 of 255)


def place_digits(digits, offsets, canvas_size: int = 75, sizes=None, box: str = "patch"):
    """Paste each digit, resized to ``sizes`` px, on a black canvas at its offset.

    Args:
      digits: uint8 ``[B, 28, 28, 1]`` (or ``[B, 28, 28]``) digits, 0..255.
      offsets: int ``[B, 2]`` top-left ``(x, y)`` of each pasted patch.
      canvas_size: ``S``.
      sizes: int ``[B]`` side ``s`` of each pasted patch, in ``[1, S]``; default 28
        (no resizing). Area resampling, see the module doc.
      box: ``"patch"`` or ``"ink"`` (see the module doc).

    Returns:
      ``(canvases, boxes)``: float32 ``[B, S, S, 1]`` in [0, 1] (at ``s = 28`` exactly
      digit/255 inside the patch), 0 outside the patch; float32 ``[B, 4]`` boxes
      ``[xmin, ymin, xmax, ymax] / S``.

    Raises ``tf.errors.InvalidArgumentError`` if an offset is negative or puts the
    patch outside the canvas.
    """
    size = check_canvas_size(canvas_size)
    if box not in BOX_DEFINITIONS:
        raise ValueError(f"box must be one of {BOX_DEFINITIONS}, got {box!r}")
    offsets = tf.cast(offsets, tf.int32)
    sizes = tf.fill([tf.shape(offsets)[0]], DIGIT_SIZE) if sizes is None else tf.cast(sizes, tf.int32)
    tf.debugging.assert_positive(sizes, message="digit sizes must be >= 1")
    tf.debugging.assert_non_negative(offsets, message="digit offsets must be >= 0")
    tf.debugging.assert_less_equal(
        offsets + sizes[:, None], size, message="digit offset puts the digit outside the canvas"
    )
    return _paste(digits, offsets, sizes, size, box)


def resize_weights(starts, sizes, canvas_size: int):
    """Area-resampling weights: ``[B, 28, S]`` float32, how much digit column (or row) ``c``
    contributes to canvas column ``X`` when the digit is resized to ``sizes[b]`` px and
    its patch starts at canvas column ``starts[b]``.

    Canvas pixel ``X`` covers the digit interval ``[u, u + 1) * 28 / s`` with
    ``u = X - start``; the weight is the part of digit pixel ``[c, c + 1)`` inside it,
    divided by the interval's length, so each column inside the patch sums to 1. At
    ``s = 28`` the weights are exactly 0 or 1: a pure shift.
    """
    stretch = float(DIGIT_SIZE) / tf.cast(sizes, tf.float32)[:, None, None]  # digit px per canvas px
    u = tf.cast(tf.range(canvas_size)[None, None, :] - starts[:, None, None], tf.float32)
    c = tf.cast(tf.range(DIGIT_SIZE), tf.float32)[None, :, None]
    overlap = tf.minimum(c + 1.0, (u + 1.0) * stretch) - tf.maximum(c, u * stretch)
    return tf.maximum(overlap, 0.0) / stretch


def linear_weights(starts, sizes, canvas_size: int):
    """Bilinear weights ``[B, 28, S]`` as OpenCV's ``cv2.resize(..., INTER_LINEAR)`` computes
    them (what ``generate_data.py`` uses): canvas pixel ``X`` of a patch of ``s`` px starting at
    ``start`` samples the digit at ``(X - start + 0.5) 28 / s - 0.5``, clamped to the digit's
    edge pixels, from its two neighbouring pixels; no antialiasing when shrinking."""
    side = tf.cast(sizes, tf.float32)[:, None, None]
    u = tf.cast(tf.range(canvas_size)[None, None, :] - starts[:, None, None], tf.float32)
    source = tf.clip_by_value((u + 0.5) * DIGIT_SIZE / side - 0.5, 0.0, DIGIT_SIZE - 1.0)
    c = tf.cast(tf.range(DIGIT_SIZE), tf.float32)[None, :, None]
    return tf.where((u >= 0) & (u < side), tf.maximum(1.0 - tf.abs(source - c), 0.0), 0.0)


def _paste(digits, offsets, sizes, size: int, box: str = "patch", weights=resize_weights):
    """:func:`place_digits` without the checks, for int32 offsets and sizes drawn in range;
    ``weights``: :func:`resize_weights` (area) or :func:`linear_weights` (bilinear).

    The input pipeline calls this: its draws are in range by construction, and assert
    ops in a ``map`` would only add work to every batch.
    """
    pixels = tf.cast(tf.reshape(digits, [-1, DIGIT_SIZE, DIGIT_SIZE]), tf.float32) / 255.0
    # Two batched matmuls paste (and resize) a whole batch, about 4x cheaper than a
    # scatter; unresized, every canvas pixel is one digit pixel times 1.0 plus zeros: exact.
    columns = weights(offsets[:, 0], sizes, size)  # [B, 28, S]
    rows = weights(offsets[:, 1], sizes, size)  # [B, 28, S]
    canvases = tf.matmul(rows, tf.matmul(pixels, columns), transpose_a=True)
    canvases = tf.minimum(canvases, 1.0)  # resampled sums of weights can round a hair above 1
    xy = tf.cast(offsets, tf.float32)
    patch = tf.concat([xy, xy + tf.cast(sizes, tf.float32)[:, None]], axis=-1)
    boxes = ink_boxes(canvases, patch) if box == "ink" else patch
    return canvases[..., None], boxes / float(size)


def ink_boxes(canvases, fallback):
    """Tightest ``[B, 4]`` pixel-edge boxes around the pixels ``>= INK_THRESHOLD`` of
    ``[B, S, S]`` canvases (not normalized); ``fallback`` where a canvas has no such pixel."""
    size = tf.shape(canvases)[-1]
    ink = canvases >= INK_THRESHOLD
    columns = tf.reduce_any(ink, axis=1)  # [B, S]
    rows = tf.reduce_any(ink, axis=2)

    def edges(mask):
        first = tf.argmax(tf.cast(mask, tf.int32), axis=1, output_type=tf.int32)
        last = size - tf.argmax(tf.cast(tf.reverse(mask, [1]), tf.int32), axis=1, output_type=tf.int32)
        return tf.cast(first, tf.float32), tf.cast(last, tf.float32)

    x0, x1 = edges(columns)
    y0, y1 = edges(rows)
    has_ink = tf.reduce_any(columns, axis=1, keepdims=True)
    return tf.where(has_ink, tf.stack([x0, y0, x1, y1], axis=-1), fallback)


def _add_clutter(canvases, offsets, sizes, fragments_from, crops, positions, size: int, piece: int = 8, overlap: bool = False):
    """Add ``k`` ``piece x piece`` distractors per canvas by one of the two rules of
    :mod:`mnist_loc.task`.

    ``canvases`` float32 ``[B, S, S, 1]`` hold the target alone; ``fragments_from`` uint8
    ``[B, k, 28, 28]`` source digits, ``crops`` int32 ``[B, k, 2]`` top-left ``(x, y)`` of
    each crop in its digit, ``positions`` int32 ``[B, k, 2]`` where it goes on the canvas.
    ``overlap=False``: pieces are cut off at the target's patch, added, clipped to [0, 1].
    ``overlap=True`` (mnist_cluttered.lua): pieces summed and clipped at 1, then the
    target added and the canvas clipped to [0, 1]. Crop and paste are one-hot matmuls.
    """
    span = tf.range(piece)
    pick_rows = tf.one_hot(crops[..., 1:2] + span, DIGIT_SIZE)  # [B, k, piece, 28]
    pick_columns = tf.one_hot(crops[..., 0:1] + span, DIGIT_SIZE)
    fragments = tf.matmul(pick_rows, tf.matmul(tf.cast(fragments_from, tf.float32) / 255.0, pick_columns, transpose_b=True))
    to_rows = tf.one_hot(positions[..., 1:2] + span, size)  # [B, k, piece, S]
    to_columns = tf.one_hot(positions[..., 0:1] + span, size)
    placed = tf.matmul(fragments, to_columns)  # [B, k, piece, S]
    batch = tf.shape(placed)[0]
    # Sum over the k fragments inside one matmul: contract over (fragment, row).
    clutter = tf.matmul(
        tf.reshape(to_rows, [batch, -1, size]), tf.reshape(placed, [batch, -1, size]), transpose_a=True
    )[..., None]  # [B, S, S, 1]
    if overlap:
        return tf.clip_by_value(tf.minimum(clutter, 1.0) + canvases, 0.0, 1.0)
    canvas_index = tf.range(size)[None, :]
    inside_x = (canvas_index >= offsets[:, 0:1]) & (canvas_index < offsets[:, 0:1] + sizes[:, None])
    inside_y = (canvas_index >= offsets[:, 1:2]) & (canvas_index < offsets[:, 1:2] + sizes[:, None])
    outside = 1.0 - tf.cast(inside_y[:, :, None] & inside_x[:, None, :], tf.float32)
    return tf.clip_by_value(canvases + clutter * outside[..., None], 0.0, 1.0)


def stream_key(seed: int, split_code: int, pass_index):
    """Stateless-RNG key for one pass of one split: a pure function of its inputs."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), split_code)
    return tf.random.experimental.stateless_fold_in(key, tf.cast(pass_index, tf.int64))


def random_offsets(num_examples: int, canvas_size: int, key):
    """Uniform integer top-left offsets ``(x, y)`` in ``[0, S - 28]``, both ends included.

    Returns int32 ``[num_examples, 2]``; row ``i`` belongs to example ``i`` of the split.
    """
    high = check_canvas_size(canvas_size) - DIGIT_SIZE + 1  # maxval is exclusive
    return tf.random.stateless_uniform(
        [num_examples, 2], seed=key, minval=0, maxval=high, dtype=tf.int32
    )


def draw_layout(num_examples: int, key, task: Task = Task()) -> dict:
    """Every random choice of one pass of a split, row ``i`` for example ``i``.

    Returns int32 tensors: ``offsets [N, 2]`` and ``sizes [N]`` of the target patch
    (offsets uniform in ``0 .. S - s``, both ends included); with ``task.clutter = k``:
    ``sources [N, k]`` (the digit each piece is cut from: another example of the split,
    or with ``clutter_overlap`` any example, drawn with replacement), ``crops [N, k, 2]``
    (uniform in ``0 .. 28 - piece``) and ``positions [N, k, 2]`` (uniform in
    ``0 .. S - piece``). At scale ``(1, 1)`` the offsets are :func:`random_offsets`'.
    """
    fold = tf.random.experimental.stateless_fold_in
    canvas_size, (lo, hi), clutter, piece = task.canvas_size, task.scale, task.clutter, task.clutter_size
    if (lo, hi) == (1.0, 1.0):
        sizes = tf.fill([num_examples], DIGIT_SIZE)
        offsets = random_offsets(num_examples, canvas_size, key)
    else:
        log_scale = tf.random.stateless_uniform([num_examples], seed=fold(key, 2), minval=np.log(lo), maxval=np.log(hi))
        smallest, largest = round(DIGIT_SIZE * lo), min(round(DIGIT_SIZE * hi), canvas_size)
        sizes = tf.clip_by_value(tf.cast(tf.round(DIGIT_SIZE * tf.exp(log_scale)), tf.int32), smallest, largest)
        room = tf.cast(canvas_size - sizes + 1, tf.float32)[:, None]  # offsets 0 .. S - s
        unit = tf.random.stateless_uniform([num_examples, 2], seed=fold(key, 3))
        offsets = tf.minimum(tf.cast(tf.floor(unit * room), tf.int32), canvas_size - sizes[:, None])
    layout = {"offsets": offsets, "sizes": sizes}
    if clutter:
        if task.clutter_overlap:
            layout["sources"] = tf.random.stateless_uniform([num_examples, clutter], seed=fold(key, 7), maxval=num_examples, dtype=tf.int32)
        else:
            if num_examples < 2:
                raise ValueError("clutter needs at least 2 digits in the split (fragments come from other digits)")
            others = tf.random.stateless_uniform([num_examples, clutter], seed=fold(key, 4), maxval=num_examples - 1, dtype=tf.int32)
            own = tf.range(num_examples)[:, None]
            layout["sources"] = others + tf.cast(others >= own, tf.int32)  # skip the example itself
        layout["crops"] = tf.random.stateless_uniform(
            [num_examples, clutter, 2], seed=fold(key, 5), maxval=DIGIT_SIZE - piece + 1, dtype=tf.int32
        )
        layout["positions"] = tf.random.stateless_uniform(
            [num_examples, clutter, 2], seed=fold(key, 6), maxval=canvas_size - piece + 1, dtype=tf.int32
        )
    return layout


def assemble(digits, indices, layout, task: Task):
    """Canvases ``[K, S, S, 1]`` and boxes ``[K, 4]`` of examples ``indices`` of the split
    ``digits`` (uint8 ``[N, 28, 28, 1]``), placed by ``layout`` (their rows of :func:`draw_layout`)."""
    canvases, boxes = _paste(tf.gather(digits, indices), layout["offsets"], layout["sizes"], task.canvas_size, task.box)
    if "sources" in layout:
        canvases = _add_clutter(
            canvases, layout["offsets"], layout["sizes"], tf.gather(digits, layout["sources"])[..., 0],
            layout["crops"], layout["positions"], task.canvas_size, task.clutter_size, task.clutter_overlap,
        )
    return canvases, boxes


AIR_SCALE = (1.3, 0.1)  # mean and standard deviation of AIR's digit scale s: a digit is int(28 / s) px
MAX_REDRAWS = 200  # a canvas drawn again this often is a bug, not bad luck (p ~ 0.3 per redraw)
MAX_PLACEMENTS = 100  # places tried per digit of a dense scene; generate_data.py tries forever


def scene_counts(num_canvases: int, key, task: Task):
    """int32 ``[N]``: how many digits each canvas of a pass holds, uniform in ``task.count``."""
    lo, hi = task.count
    return tf.random.stateless_uniform([num_canvases], seed=key, minval=lo, maxval=hi + 1, dtype=tf.int32)


def scene_attempt(num_canvases: int, num_digits: int, key, task: Task) -> dict:
    """One drawing of every canvas of a pass by AIR's rules (:mod:`mnist_loc.task`), row ``i``
    for canvas ``i``: int32 ``sources [N, K]`` (digits of the split, uniform with replacement),
    ``sizes [N, K]`` (``int(28 / s)``, ``s ~ Normal(1.3, 0.1)``, kept in ``1 .. S - 1`` so an
    offset exists) and ``offsets [N, K, 2]`` (``(x, y)``, each uniform in ``0 .. S - w - 1``:
    the generator's ``randint(0, S - w)`` never reaches the last position)."""
    fold = tf.random.experimental.stateless_fold_in
    shape, size = [num_canvases, task.max_count], task.canvas_size
    sources = tf.random.stateless_uniform(shape, seed=fold(key, 1), maxval=num_digits, dtype=tf.int32)
    mean, spread = AIR_SCALE
    scale = mean + spread * tf.random.stateless_normal(shape, seed=fold(key, 2))
    sizes = tf.clip_by_value(tf.cast(tf.math.floor(DIGIT_SIZE / tf.maximum(scale, 1e-3)), tf.int32), 1, size - 1)
    room = tf.cast(size - sizes, tf.float32)[..., None]  # positions 0 .. S - w - 1
    unit = tf.random.stateless_uniform([*shape, 2], seed=fold(key, 3))
    offsets = tf.minimum(tf.cast(tf.floor(unit * room), tf.int32), size - sizes[..., None] - 1)
    return {"sources": sources, "sizes": sizes, "offsets": offsets}


def draw_air_scenes(digits, labels, indices, counts, key, task: Task, num_canvases: int):
    """Canvases ``indices`` of one pass by AIR's rules, each redrawn until no pixel overflows.

    ``digits`` uint8 ``[D, 28, 28, 1]`` and ``labels`` int ``[D]``: the split; ``counts``
    int32 ``[B]``: the canvases' rows of :func:`scene_counts`; ``key``: the pass's key. Try
    ``t`` of canvas ``i`` uses row ``i`` of ``scene_attempt(..., fold_in(key, 100 + t))``, so
    a canvas depends only on its index, the pass and the task, whatever batch it is in.

    Returns ``(canvases float32 [B, S, S, 1], labels int32 [B, K], boxes float32 [B, K, 4])``,
    digits in drawing order, label -1 and box 0 where a canvas holds fewer than ``K``; boxes
    are each digit's own tight ink box ``[xmin, ymin, xmax, ymax]`` normalized to the canvas.
    """
    size, k = task.canvas_size, task.max_count
    batch = tf.shape(indices)[0]
    present = tf.range(k)[None, :] < counts[:, None]  # [B, K]
    digit_labels = tf.cast(labels, tf.int32)

    def attempt(t):
        layout = scene_attempt(num_canvases, len(digits), tf.random.experimental.stateless_fold_in(key, 100 + t), task)
        layout = {name: tf.gather(value, indices) for name, value in layout.items()}
        flat = lambda v: tf.reshape(v, [-1, *v.shape[2:]])  # noqa: E731  [B, K, ...] -> [B K, ...]
        pasted, boxes = _paste(tf.gather(digits, flat(layout["sources"])), flat(layout["offsets"]), flat(layout["sizes"]), size, "ink")
        pasted = tf.reshape(pasted, [batch, k, size, size]) * tf.cast(present, tf.float32)[..., None, None]
        canvas = tf.reduce_sum(pasted, axis=1)
        fits = tf.reduce_max(canvas, axis=[1, 2]) <= 1.0 + 1e-6  # no pixel above 255
        found = tf.where(present, tf.gather(digit_labels, layout["sources"]), -1)
        return canvas, found, tf.where(present[..., None], tf.reshape(boxes, [batch, k, 4]), 0.0), fits

    def step(t, done, canvas, found, boxes):
        new_canvas, new_found, new_boxes, fits = attempt(t)
        take = fits & ~done
        return (t + 1, done | fits, tf.where(take[:, None, None], new_canvas, canvas),
                tf.where(take[:, None], new_found, found), tf.where(take[:, None, None], new_boxes, boxes))

    start = (tf.constant(0), tf.zeros([batch], tf.bool), tf.zeros([batch, size, size]),
             -tf.ones([batch, k], tf.int32), tf.zeros([batch, k, 4]))
    t, done, canvas, found, boxes = tf.while_loop(
        lambda t, done, *_: (t < MAX_REDRAWS) & ~tf.reduce_all(done), step, start)
    tf.debugging.assert_equal(tf.reduce_all(done), True, message=f"a canvas overflowed in {MAX_REDRAWS} drawings")
    return canvas[..., None], found, boxes


def dense_draws(indices, key, task: Task, num_digits: int):
    """The random choices of dense-scene canvases ``indices`` (int32 ``[B]``), each keyed by
    ``fold_in(fold_in(key, 1), index)`` alone: int32 ``sources [B, K]`` (digits of the split,
    uniform with replacement), ``sides [B, K, T]`` (uniform in ``DETECTION_SIDES``) and
    ``offsets [B, K, T, 2]`` (``(x, y)``, each uniform in ``0 .. S - side - 1``), ``T =
    MAX_PLACEMENTS`` candidate places per digit slot, tried in order."""
    fold = tf.random.experimental.stateless_fold_in
    k, size = task.max_count, task.canvas_size
    lo, hi = DETECTION_SIDES
    base = fold(key, 1)

    def one(index):
        seed = fold(base, tf.cast(index, tf.int64))
        sources = tf.random.stateless_uniform([k], seed=fold(seed, 1), maxval=num_digits, dtype=tf.int32)
        sides = tf.random.stateless_uniform([k, MAX_PLACEMENTS], seed=fold(seed, 2), minval=lo, maxval=hi + 1, dtype=tf.int32)
        unit = tf.random.stateless_uniform([k, MAX_PLACEMENTS, 2], seed=fold(seed, 3))
        room = tf.cast(size - sides, tf.float32)[..., None]  # positions 0 .. S - side - 1
        offsets = tf.minimum(tf.cast(tf.floor(unit * room), tf.int32), size - sides[..., None] - 1)
        return sources, sides, offsets

    return tf.map_fn(one, indices, fn_output_signature=(tf.int32, tf.int32, tf.int32))


def place_dense(sides, offsets, boxes_of, present, canvas_size: int):
    """The first free candidate place of each digit slot, slot after slot.

    ``sides`` int32 ``[B, K, T]``, ``offsets`` int32 ``[B, K, T, 2]``: the candidates;
    ``boxes_of(slot, side [B], offset [B, 2])`` → the slot's placed digits' tight boxes
    ``[B, 4]`` normalized to the canvas; ``present`` bool ``[B, K]`` (a prefix per canvas).
    A candidate is free when the IoU of its full square with every earlier digit's box is
    below ``DETECTION_MAX_IOU``. Returns the chosen ``sides [B, K]``, ``offsets [B, K, 2]``
    and ``boxes [B, K, 4]`` (0 where absent); raises ``InvalidArgumentError`` when a present
    digit has no free candidate among its ``T``.
    """
    chosen_sides, chosen_offsets, boxes = [], [], []
    for slot in range(sides.shape[1]):
        side, offset = sides[:, slot], offsets[:, slot]  # [B, T], [B, T, 2]
        corner = tf.cast(offset, tf.float32) / canvas_size
        square = tf.concat([corner, corner + tf.cast(side, tf.float32)[..., None] / canvas_size], axis=-1)  # [B, T, 4]
        if boxes:
            earlier = tf.stack(boxes, axis=1)  # [B, slot, 4]
            overlap = iou_tensor(square[:, :, None, :], earlier[:, None, :, :], tf)  # [B, T, slot]
            free = tf.reduce_max(overlap, axis=-1) < DETECTION_MAX_IOU
        else:
            free = tf.ones_like(side, tf.bool)
        tf.debugging.assert_equal(
            tf.reduce_all(tf.reduce_any(free, axis=1) | ~present[:, slot]), True,
            message=f"digit {slot + 1} of a dense scene found no place overlapping the earlier digits' boxes with IoU < "
                    f"{DETECTION_MAX_IOU} in {MAX_PLACEMENTS} tries: the canvas is too small for {sides.shape[1]} digits")
        first = tf.argmax(tf.cast(free, tf.int32), axis=1, output_type=tf.int32)
        side = tf.gather(side, first, batch_dims=1)
        offset = tf.gather(offset, first, batch_dims=1)
        chosen_sides.append(side)
        chosen_offsets.append(offset)
        boxes.append(tf.where(present[:, slot, None], boxes_of(slot, side, offset), 0.0))
    return tf.stack(chosen_sides, 1), tf.stack(chosen_offsets, 1), tf.stack(boxes, 1)


def draw_dense_scenes(digits, labels, indices, counts, key, task: Task, num_canvases: int):
    """Canvases ``indices`` of one pass by ``generate_data.py``'s rules (:mod:`mnist_loc.task`):
    :func:`draw_air_scenes`' arguments and returns (``num_canvases`` unused: each canvas is keyed by its index). Digits
    are resized bilinearly (:func:`linear_weights`), each boxed by its own ink before the
    next is placed, added, and the sum clipped at 1."""
    size = task.canvas_size
    present = tf.range(task.max_count)[None, :] < counts[:, None]  # [B, K]
    sources, sides, offsets = dense_draws(indices, key, task, len(digits))
    canvas = [tf.zeros([tf.shape(indices)[0], size, size])]

    def boxes_of(slot, side, offset):
        image, box = _paste(tf.gather(digits, sources[:, slot]), offset, side, size, "ink", weights=linear_weights)
        # A running sum: one canvas and one digit in memory at a time, not all K pasted digits.
        canvas[0] = canvas[0] + image[..., 0] * tf.cast(present[:, slot], tf.float32)[:, None, None]
        return box

    _, _, boxes = place_dense(sides, offsets, boxes_of, present, size)
    canvases = tf.minimum(canvas[0], 1.0)  # added, then clipped at full intensity
    found = tf.where(present, tf.gather(tf.cast(labels, tf.int32), sources), -1)
    return canvases[..., None], found, boxes


SCENE_DRAWERS = {"air": draw_air_scenes, "mnist-detection": draw_dense_scenes}  # task.rules -> how its canvases are drawn


def draw_scenes(digits, labels, indices, counts, key, task: Task, num_canvases: int):
    """Canvases ``indices`` of one pass of a task of several digits, by its rules
    (:data:`SCENE_DRAWERS`); arguments and returns as :func:`draw_air_scenes`'."""
    # Drawn as a batch of unknown size: for a known one, TensorFlow's graph picks kernels whose sums
    # differ in the last bit from run to run (dense training canvases did). The known size is given
    # back to what is drawn, so the graphs that train on it stay as they were.
    indices = tf.convert_to_tensor(indices, tf.int32)
    batch = indices.shape[0]
    unknown = lambda t: tf.raw_ops.PlaceholderWithDefault(input=tf.convert_to_tensor(t), shape=[None])  # noqa: E731
    drawn = SCENE_DRAWERS[task.rules](digits, labels, unknown(indices), unknown(counts), key, task, num_canvases)
    return tuple(tf.ensure_shape(t, [batch, *t.shape[1:]]) for t in drawn)
