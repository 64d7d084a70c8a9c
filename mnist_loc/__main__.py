import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: keep C++ start-up chatter out

from mnist_loc.cli import main  # noqa: E402

sys.exit(main())
