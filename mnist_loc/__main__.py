import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: keep C++ start-up chatter out

from mnist_loc.cli import program  # noqa: E402

program()
