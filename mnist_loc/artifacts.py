"""What a run leaves: its folder (``model.keras``, ``task.json``, ``metrics.json``,
``history.csv``, ``predictions.png``), written atomically and read back; models loaded safely.

Keras is imported only by the functions that save or load a model, so the table of runs
reads folders without starting TensorFlow.
"""

from __future__ import annotations

import csv
import io
import statistics
import json
import math
import os
import warnings
import zipfile

from .safe_writes import atomic_path, write_json, write_text

TASK_FILE = "task.json"
METRICS_FILE = "metrics.json"


def write_history_csv(path, history: dict) -> None:
    """Write ``{metric: [per-epoch values]}`` as CSV with an ``epoch`` column (1-based), atomically.

    From the history the backup resumes with: Keras' CSVLogger appends as it trains, so a run
    killed between its row and the backup would repeat that epoch's row on resume."""
    names = sorted(history)
    epochs = max((len(v) for v in history.values()), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", *names])
    for e in range(epochs):
        writer.writerow([e + 1, *(repr(history[n][e]) if e < len(history[n]) else "" for n in names)])
    write_text(path, buffer.getvalue())


def read_history_csv(path) -> dict:
    """The ``{metric: [per-epoch values]}`` that :func:`write_history_csv` wrote."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    names = [n for n in (rows[0] if rows else {}) if n != "epoch"]
    return {n: [float(r[n]) for r in rows if r[n] != ""] for n in names}


def save_model(model, path) -> None:
    """Save ``model`` as a ``.keras`` file, atomically."""
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"model path must end in .keras, got {path!r}")
    with atomic_path(path) as tmp:
        model.save(tmp)


class ModelFileError(ValueError):
    """A model file is missing, unreadable, not a Keras model, or unsafe to load."""


def load_model(path):
    """Load a ``.keras`` model saved by mnist_loc, in Keras' safe mode.

    Safe mode refuses files that would run arbitrary code when loaded (a ``Lambda``
    layer's pickled function); before Keras reads the file, a config naming any module
    outside Keras and mnist_loc (``os.system``, ``subprocess.Popen``, ...) is refused. Raises :class:`ModelFileError` with the reason for a
    missing, truncated, non-Keras or unsafe file.
    """
    import keras

    from . import detector, model  # noqa: F401  register their Keras classes (losses, metric, CountThreshold)

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model file not found: {path}")
    if os.path.isdir(path) or not path.endswith(".keras"):
        raise ModelFileError(f"not a .keras model file: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a Keras model (not a .keras zip archive, or truncated)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(f"{path} is not a Keras model (no config.json inside)")
            if archive.testzip() is not None:
                raise ModelFileError(f"{path} is corrupt (a member fails its checksum)")
            foreign = _foreign_names(json.loads(archive.read("config.json")), set(keras.saving.get_custom_objects()))
        if foreign:
            raise ModelFileError(
                f"refused to load {path}: its config names {foreign[0]}, which is neither Keras nor "
                "mnist_loc and could run arbitrary code"
            )
        with warnings.catch_warnings():
            # A model saved before its first step has an unbuilt optimizer; nothing is lost.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.saving.load_model(path, safe_mode=True)
    except ModelFileError:
        raise
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ModelFileError(
                f"refused to load {path}: it contains a Lambda layer, which would run arbitrary "
                "code (Keras safe mode)"
            ) from None
        raise ModelFileError(f"could not load {path} as a Keras model: {error}") from None
    except Exception as error:  # zip/h5/json damage surfaces as many types
        raise ModelFileError(f"could not load {path} as a Keras model: {type(error).__name__}: {error}") from None


def _foreign_names(config, registered=frozenset()) -> list:
    """Every ``module.class_name`` an archived config asks the loader to import from outside
    Keras and mnist_loc (e.g. ``os.system`` as an activation, ``subprocess.Popen`` as a layer).

    Classes registered with ``keras.saving.register_keras_serializable`` (their
    ``registered_name`` in ``registered``) are allowed: Keras resolves those names to the
    registered class, never by importing the module. Keras' safe mode refuses the others
    too (tests pin it); checking first gives a clear reason.
    """
    found, stack = [], [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            module = node.get("module")
            if "class_name" in node and module is not None and node.get("registered_name") not in registered:
                if not isinstance(module, str) or module.split(".")[0] not in ("keras", "mnist_loc"):
                    found.append(f"{module}.{node.get('config') if node.get('class_name') == 'function' else node['class_name']}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def task_path(model_path) -> str:
    """Where the task of a saved model is recorded: ``task.json`` beside it."""
    return os.path.join(os.path.dirname(os.path.abspath(os.fspath(model_path))), TASK_FILE)


def read_task(model_path):
    """The task a saved model was trained on and its class names: ``(Task, list)``, or
    ``(None, None)`` for a model saved without ``task.json``. Raises ValueError for a
    ``task.json`` that is not a task."""
    from .task import Task

    path = task_path(model_path)
    if not os.path.exists(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            fields = json.load(f)
        return Task.from_dict(fields), fields.get("class_names")
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path} is not a task ({' '.join(str(error).split())})") from None


def describe_model(model) -> dict:
    """What a run records of its model: ``name``, ``class`` (module.qualname), ``parameters``
    and ``compute_dtypes`` (the layers' compute dtypes, sorted: ``["bfloat16", "float32"]``
    for the course model's bfloat16 trunk)."""
    cls = type(model)
    dtypes = sorted({layer.compute_dtype for layer in model.layers if layer.compute_dtype})
    parameters = sum(math.prod(variable.shape) for variable in model.weights)  # Keras' count_params, also for a model traced but not called
    return {"name": model.name, "class": f"{cls.__module__}.{cls.__qualname__}", "parameters": int(parameters), "compute_dtypes": dtypes}


def save_run(out_dir, model, metrics: dict, history: dict, task: dict, figure=None) -> None:
    """Write a finished run into ``out_dir`` (the caller holds its lock): ``model.keras``,
    ``metrics.json`` (``metrics``), ``task.json`` (``task``: the task's fields and class names,
    so ``evaluate``/``predict`` recreate matching canvases from the model alone),
    ``history.csv`` and, given a ``figure``, ``predictions.png``; each file atomically."""
    save_model(model, os.path.join(out_dir, "model.keras"))
    write_json(os.path.join(out_dir, METRICS_FILE), metrics)
    write_json(os.path.join(out_dir, TASK_FILE), task)
    write_history_csv(os.path.join(out_dir, "history.csv"), history)
    if figure is not None:
        with atomic_path(os.path.join(out_dir, "predictions.png")) as tmp:
            figure.savefig(tmp, format="png", dpi=100)


def read_metrics(folder) -> dict:
    """The ``metrics.json`` of a run folder. Raises ValueError naming the folder if it has none, or
    if it lacks the training times or the config (its kind's scores are checked by the table)."""
    path = os.path.join(os.fspath(folder), METRICS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{folder} is not a run folder (no metrics.json)") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({' '.join(str(error).split())})") from None
    missing = [k for k in ("train_seconds", "train_cpu_seconds", "config") if k not in metrics]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not written by mnist_loc's run()")
    return metrics


_NEWER_FIELDS = {"detector": "small", "class_loss_weight": 0.0}  # TrainConfig fields newer than some saved runs, at the value those runs had


def finished_run(out_dir, config: dict, model: dict, split: str, tta: bool) -> dict | None:
    """The ``metrics.json`` of the finished run in ``out_dir`` if it is this run (the same
    ``config`` dict, split, test-time augmentation, and a model of the same name and parameter
    count as ``model``, :func:`describe_model`; ``parameters`` None: any, for the default model
    whose shape the config fixes), else None."""
    if not os.path.exists(os.path.join(out_dir, "model.keras")):
        return None
    try:
        metrics = read_metrics(out_dir)
    except ValueError:
        return None
    stored = metrics.get("model", {})
    recorded = {**_NEWER_FIELDS, **metrics["config"]}
    parameters = stored.get("parameters") if model["parameters"] is None else model["parameters"]  # None: the config fixes them
    same = (recorded, metrics.get("split"), bool(metrics.get("tta")), stored.get("name"), stored.get("parameters"))
    return metrics if same == (config, split, bool(tta), model["name"], parameters) else None


def notebook_metrics(path) -> dict:
    """The ``METRICS {json}`` line a notebook printed in its committed outputs, as a dict.

    Lets one notebook quote another's full run without re-running it. Raises ValueError
    if the notebook has no such line.
    """
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            for line in "".join(output.get("text", "")).splitlines():
                if line.startswith("METRICS {"):
                    return json.loads(line[len("METRICS "):])
    raise ValueError(f"{path} has no 'METRICS {{...}}' line in its outputs: run it first")


def spread(values, fmt: str) -> str:
    """Several runs' numbers as one cell: ``mean (lowest–highest)`` in ``fmt``, the number alone
    for one run, "–" for none (None values are skipped)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"
