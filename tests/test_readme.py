"""README's Python snippets run as written, on the real MNIST copy, with every run cut to a few steps."""

import dataclasses
import re

import pytest

from conftest import ROOT, tiny_model


def snippets() -> list:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert len(snippets()) >= 2


def test_readme_snippets_run_as_written(mnist_dir, tmp_path, monkeypatch):
    import mnist_loc
    from mnist_loc import experiment

    real_run = experiment.run

    def short_run(config, *args, **kwargs):  # the README's recipes, two steps a pass and one pass
        config = dataclasses.replace(config, epochs=1, steps_per_epoch=2, validation_canvases=100)
        return real_run(config, *args, **{"callbacks": [], **kwargs})

    monkeypatch.setenv("TFDS_DATA_DIR", mnist_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mnist_loc, "run", short_run, raising=False)
    namespace = {"my_builder": tiny_model}
    for code in snippets():
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "quick" / "metrics.json").exists() and (tmp_path / "runs" / "mine" / "metrics.json").exists()


@pytest.mark.parametrize("name", ["run", "evaluate", "predict", "Digits", "TrainConfig", "make_dataset", "load_model"])
def test_names_the_readme_uses_are_exported(name):
    import mnist_loc

    assert name in mnist_loc.__all__ and getattr(mnist_loc, name) is not None
