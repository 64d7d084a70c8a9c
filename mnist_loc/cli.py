"""``python -m mnist_loc``: train, evaluate, predict and compare runs from the command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from .tf_runtime import cpp_logs_filtered, import_tensorflow_quietly

USAGE_ERROR = 2
RUN_ERROR = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum):
    def parse(text):
        if not text.strip().lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
        if int(text) < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {int(text)}")
        return int(text)

    return parse


def _positive_float(text):
    try:
        if 0 < float(text) < float("inf"):
            return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")


def _data_dir(text):
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not a directory: {text}")
    return text


def _add_data_flags(parser) -> None:
    parser.add_argument(
        "--data-dir", type=_data_dir, default=None,
        help="tensorflow-datasets folder searched first for MNIST, then $TFDS_DATA_DIR and "
        "~/tensorflow_datasets; MNIST is downloaded into the first of these if none holds it",
    )
    parser.add_argument("--no-download", dest="download", action="store_false", help="never download: fail if MNIST is not prepared")


COMMANDS = {  # name: (help, description)
    "train": ("train the model, evaluate it on the test canvases, save everything", (
        "Train with mnist_loc's recipe for the task, evaluate on the task's fixed test canvases and write OUT/model.keras, "
        "OUT/task.json, OUT/metrics.json (test report, train_seconds, config), OUT/history.csv and OUT/predictions.png. "
        "Every finished epoch is backed up in OUT/backup/: if the run is interrupted, the same command resumes it.")),
    "evaluate": ("score a saved model on the fixed test (or validation) canvases", (
        "Print the evaluation report of a saved model, its kind's: accuracy, IoU statistics and per-class numbers for one "
        "digit a canvas; COCO AP, recall, counting and per-class AP50 for several. With --json, also write it as JSON.")),
    "predict": ("predict digits and boxes for image files", (
        "For each image (PNG or .npy, grayscale, light digit on black like MNIST) print the predicted digit, its "
        "confidence and the box [xmin, ymin, xmax, ymax] in pixels (a detector: each digit it counts). An image smaller "
        "than the model's canvas is placed at the canvas' top-left corner on black, so the box stays in the image's own "
        "pixel frame; a larger one is refused. RGB(A) PNGs are converted to gray by averaging R, G and B. With --draw, "
        "writes a PNG of the images with their predicted boxes; with --explain, a PNG of where a two-headed model looks "
        "for each head (Grad-CAM on its last convolution).")),
    "table": ("compare run folders in one Markdown table", (
        "Read the metrics.json of each run folder (written by train, run() or a notebook, on any machine: copy the "
        "folders here) and print one row per task x model x recipe: number of seeds, then each kind's scores (error %%, "
        "accuracy, mean IoU, IoU >= 0.5; AP, AP50, count accuracy, fully right) and train seconds (wall and CPU) as mean "
        "(lowest-highest).")),
}


def build_parser() -> argparse.ArgumentParser:
    from .config import TrainConfig
    from .task import TASKS

    d = TrainConfig()
    parser = _Parser(prog="python -m mnist_loc", description="MNIST object localization: one CNN classifies a digit and regresses its box.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train, evaluate, predict, table = (sub.add_parser(name, help=h, description=text) for name, (h, text) in COMMANDS.items())
    for flags, kwargs in (
        (["--task"], dict(choices=tuple(TASKS), default="course", help="named task (default course); --dataset/--scale/--box/--clutter refine it, the recipe stays the named task's")),
        (["--preset"], dict(choices=("default", "fast", "lab"), default="default", help="recipe: mnist_loc's for the task (default), fast (the lab's quality in a fraction of its time) or the course lab's; recipe flags go on top")),
        (["--epochs"], dict(type=_int_at_least(0), help=f"passes of training (default: the task's recipe, {d.epochs} for the course task)")),
        (["--steps-per-epoch"], dict(type=_int_at_least(1), help="batches per epoch (default: one pass over the task's training digits)")),
        (["--validation-canvases"], dict(type=_int_at_least(1), help="validation canvases scored after each epoch (default: all of the split's)")),
        (["--batch-size"], dict(type=_int_at_least(1), help=f"(default: the task's recipe, {d.batch_size} for the course task)")),
        (["--learning-rate"], dict(type=_positive_float, help=f"peak learning rate (default: the task's recipe, {d.learning_rate:g} for the course task)")),
        (["--seed"], dict(type=_int_at_least(0), default=d.seed, help="seed of init, shuffle and placement (default 0)")),
        (["--dataset"], dict(help="tfds dataset of 28x28 gray images with class labels: mnist (the tasks'), fashion_mnist, kmnist, emnist/digits, ...")),
        (["--scale"], dict(nargs=2, type=_positive_float, metavar=("LO", "HI"), help="resize each digit by a factor drawn log-uniformly in [LO, HI] (the course task: 1 1)")),
        (["--box"], dict(choices=("patch", "ink"), help="target box: the pasted square (the course task's) or the tightest box around the ink")),
        (["--clutter"], dict(type=_int_at_least(0), help="distractor pieces per canvas (the course task: 0)")),
        (["--tta"], dict(action="store_true", help="score the test canvases with test-time augmentation (5 shifted views; 5x the predict time)")),
        (["--out"], dict(default="runs/default", help="output folder (default runs/default)")),
        (["--strategy"], dict(choices=("default", "mirrored"), default="default", help="tf.distribute strategy: mirrored uses every visible GPU (or device)")),
        (["--restart"], dict(action="store_true", help="discard an existing backup in OUT/backup instead of resuming it")),
    ):
        train.add_argument(*flags, **kwargs)
    for command in (train, evaluate):
        _add_data_flags(command)
    for command in (evaluate, predict):
        command.add_argument("--model", required=True, help="a .keras file written by train")
        command.add_argument("--tta", action="store_true", help=TTA_HELP)
    evaluate.add_argument("--split", choices=("test", "validation"), default="test")
    evaluate.add_argument("--seed", type=_int_at_least(0), default=0, help="placement seed of the canvases (default 0, as train)")
    evaluate.add_argument("--json", metavar="FILE", help="also write the report here")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--draw", metavar="OUT.png", help="save the images with predicted boxes drawn")
    predict.add_argument("--explain", metavar="OUT.png", help="save Grad-CAM heatmaps of both heads over the images: where the model looks to name the digit and to place the box")
    table.add_argument("runs", nargs="+", metavar="RUN_DIR")
    return parser


TTA_HELP = "test-time augmentation: average over the canvas and 4 copies shifted by 2 px"


def train_config(args):
    """The TrainConfig that ``train``'s parsed flags describe: the named task refined by
    the task flags, the preset's recipe for the named task, recipe flags on top."""
    from .config import TASK_RECIPES, TrainConfig, preset
    from .task import TASKS

    refine = {"dataset": args.dataset, "scale": None if args.scale is None else tuple(args.scale), "box": args.box, "clutter": args.clutter}
    task = TASKS[args.task].replace(**{k: v for k, v in refine.items() if v is not None})
    chosen = {name: getattr(args, name) for name in ("epochs", "batch_size", "learning_rate") if getattr(args, name) is not None}
    common = dict(task=task, steps_per_epoch=args.steps_per_epoch, validation_canvases=args.validation_canvases, seed=args.seed, **chosen)
    if args.preset == "default":
        return TrainConfig.for_task(recipe=TASK_RECIPES.get(args.task, "default"), **common)
    return preset(args.preset, **common)


def _cmd_train(args) -> int:
    import tensorflow as tf

    from .data import Digits
    from .evaluation import kind_of
    from .experiment import run

    config = train_config(args)
    strategy = tf.distribute.MirroredStrategy() if args.strategy == "mirrored" else None
    interactive = sys.stdout.isatty()
    digits = Digits.find(config.task, args.data_dir, download=args.download)  # a first run downloads here
    print(f"task {config.task.describe()}; recipe {config.recipe_label()}", flush=True)
    result = run(
        config, out_dir=args.out, digits=digits, restart=args.restart, tta=args.tta,
        strategy=strategy, verbose=1 if interactive else 0, callbacks=() if interactive else None,
    )
    if result.resumed_from_epoch:
        print(f"resumed after epoch {result.resumed_from_epoch} from {os.path.join(args.out, 'backup')}")
    report = result.report
    title = (f"test report ({report['num_examples']:,} canvases, placement seed {report['placement_seed']}); "
             f"train {result.train_seconds:.1f} s (CPU {result.train_cpu_seconds:.0f} s)")
    print(kind_of(config.task).format_report(report, title, class_names=None if config.task.dataset == "mnist" else digits.class_names))
    print(f"wrote {args.out}/model.keras, task.json, metrics.json, history.csv, predictions.png")
    return 0


def _cmd_table(args) -> int:
    from .table import runs_table

    print(runs_table(args.runs))
    return 0


def _cmd_evaluate(args) -> int:
    from . import artifacts
    from .data import Digits
    from .evaluation import kind_of
    from .safe_writes import write_json

    model = artifacts.load_model(args.model)
    task, names = _saved_task(args.model, model)
    digits = Digits.find(task, args.data_dir, download=args.download)
    report = {**kind_of(task, model).evaluate(model, digits, task=task, split=args.split, seed=args.seed, tta=args.tta),
              "split": args.split}
    title = f"{args.split} report of {args.model} ({report['num_examples']:,} canvases, seed {args.seed}; {task.describe()})"
    print(kind_of(task).format_report(report, title, class_names=None if task.dataset == "mnist" else names))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _saved_task(model_path, model):
    """The task a saved model was trained on (task.json beside it) and its class names;
    for a model saved without one, the course task at the model's canvas size."""
    from . import artifacts
    from .inference import model_canvas_size
    from .task import Task

    task, names = artifacts.read_task(model_path)
    if task is None:
        task = Task(canvas_size=model_canvas_size(model) or Task().canvas_size)
    return task, names


def image_shape(path: str) -> tuple:
    """The shape a PNG or .npy file declares in its header, read without decoding the pixels.

    PNG: ``(height, width)`` from the IHDR chunk (not Pillow: it refuses a PNG of over 179 M
    pixels before saying its size); .npy: the array's shape from its header. Raises ValueError
    for a file that is not what its name says.
    """
    import struct

    import numpy as np

    with open(path, "rb") as f:
        if path.lower().endswith(".png"):
            head = f.read(24)
            if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
                raise ValueError(f"{path}: not a PNG file")
            width, height = struct.unpack(">II", head[16:24])
            return (height, width)
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(f)
        except ValueError as error:
            raise ValueError(f"{path}: not a .npy file ({error})") from None
        return tuple(shape)


def read_image(path: str, canvas_size: int):
    """Read a PNG or .npy image as a float32 ``[S, S]`` canvas in [0, 1].

    Returns ``(canvas, (height, width))``. Smaller images are placed top-left on a
    black canvas. Larger ones are refused from the file's header, before any pixel is
    decoded (a few-KB PNG can declare 15000x15000 pixels); so are non-2D arrays and
    unreadable files: all raise ValueError.
    """
    import numpy as np

    from .inference import to_unit_float

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}")
    lower = path.lower()
    if not lower.endswith((".png", ".npy")):
        raise ValueError(f"{path}: unsupported image type (use .png or .npy)")
    try:
        shape = image_shape(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot read image ({type(error).__name__}: {error})") from None
    grayscale_like = len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))
    if not grayscale_like:
        raise ValueError(f"{path}: expected a 2-D grayscale image, got shape {shape}")
    if shape[0] > canvas_size or shape[1] > canvas_size:
        raise ValueError(f"{path}: image is {shape[0]}x{shape[1]}, larger than the model's {canvas_size}x{canvas_size} canvas")
    try:
        if lower.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
        else:
            from matplotlib.image import imread

            array = imread(path, format="png")
    except Exception as error:
        raise ValueError(f"{path}: cannot read image ({type(error).__name__}: {error})") from None
    if array.ndim == 3 and array.shape[-1] in (3, 4) and lower.endswith(".png"):
        array = array[..., :3].mean(-1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D grayscale image, got shape {array.shape}")
    array = to_unit_float(array, path)
    height, width = array.shape  # as the header said: checked above
    canvas = np.zeros((canvas_size, canvas_size), np.float32)
    canvas[:height, :width] = array
    return canvas, (height, width)


def _cmd_predict(args) -> int:
    import numpy as np

    from . import artifacts
    from .evaluation import kind_of, predict
    from .safe_writes import atomic_path

    model = artifacts.load_model(args.model)
    task, names = _saved_task(args.model, model)
    size, names = task.canvas_size, None if task.dataset == "mnist" else names
    kind = kind_of(model=model, canvas_size=size)
    images = np.stack([read_image(path, size)[0] for path in args.images])
    pred = predict(model, images, tta=args.tta, canvas_size=size)
    print("\n".join(kind.print_predictions(args.images, pred, size, names)))
    figures = {}
    if args.draw:
        figures[args.draw] = kind.draw_predictions(images, pred, names)
    if args.explain:
        from .explain import HEADS, heatmaps
        from .plots import plot_heatmaps

        maps = {head: heatmaps(model, images, head) for head in HEADS}
        figures[args.explain] = plot_heatmaps(images, maps, None, pred["boxes"], pred_labels=pred["labels"])
    for path, figure in figures.items():
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        print(f"wrote {path}")
    return 0


def _resume_hint(args) -> str:
    """What a stopped command left, and how to go on: for train, the backup's last epoch."""
    if args.command != "train":
        return ""
    import json

    backup = os.path.join(args.out, "backup")
    try:
        with open(os.path.join(backup, "state.json"), encoding="utf-8") as f:
            done = int(json.load(f)["epochs_done"])
        return f"; {backup} keeps epoch {done}: rerun the same command to resume"
    except (OSError, ValueError, KeyError, TypeError):
        return "; no epoch had finished: rerun the same command to start again"


def main(argv=None) -> int:
    """Run one command in this process; returns the exit status (Ctrl-C unwinds with one line, 130)."""
    return _main(build_parser().parse_args(argv))


def program() -> None:
    """The ``python -m mnist_loc`` (and ``mnist-loc``) entry point: :func:`main` with
    SIGTERM and SIGINT taken by a watcher thread, so a signal stops the process within a
    second even while TensorFlow runs a long call (a Python handler only runs when the call
    returns: 16 s for 15 steps on a slow CPU). The watcher lets a file write in progress
    finish, removes the output locks, prints one line naming what the backup keeps and
    exits with 143 / 130."""
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # before TensorFlow starts threads: they inherit the mask
    args = build_parser().parse_args()

    def watch():
        from .safe_writes import exit_now

        signum = signal.sigwait(signals)
        said = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
        exit_now(128 + signum, lambda: f"mnist_loc: {said}{_resume_hint(args)}")

    threading.Thread(target=watch, name="mnist_loc-signals", daemon=True).start()
    code = _main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _main(args) -> int:
    from .safe_writes import FolderInUse, WriteError, output_lock

    try:
        # Claim --out before the slow imports, so a second run on it is refused at once.
        with output_lock(args.out) if args.command == "train" else contextlib.nullcontext():
            return _run(args)
    except KeyboardInterrupt:
        print(f"mnist_loc: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 128 + signal.SIGINT
    except (FolderInUse, WriteError) as error:
        return _error(error)


def _error(error) -> int:
    print(f"mnist_loc: error: {' '.join(str(error).split())}", file=sys.stderr)
    return RUN_ERROR


def _run(args) -> int:
    import_tensorflow_quietly()
    from .artifacts import ModelFileError
    from .tfds_source import DataNotFoundError
    from .training import TrainingDiverged

    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict, "table": _cmd_table}
    try:
        with cpp_logs_filtered():  # TensorFlow logs some C++ lines at the first step, past its log level
            return commands[args.command](args)
    except BrokenPipeError:  # output piped into `head` and the like: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return RUN_ERROR
    except (ModelFileError, DataNotFoundError, TrainingDiverged, FileNotFoundError, ValueError, TypeError) as error:
        return _error(error)
