import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: keep C++ start-up chatter out

from mnist_loc.cli import main  # noqa: E402

code = main()
if code in (130, 143):
    # Stopped by a signal: every file is complete and the lock released, so skip the interpreter's
    # teardown of TensorFlow, which took 4-7 s after the message on a busy 2-core machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
