"""TensorFlow's C++ log lines are dropped from stderr; everything else written there is kept."""

import os
import time

from mnist_loc.tf_runtime import cpp_logs_filtered

TF_LINES = [
    # absl's format (TF 2.21), and its pre-init banner
    b"I0000 00:00:1795732122.447123    3136 port.cc:153] oneDNN custom operations are on.\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    # TensorFlow's own format: TF 2.20 on a machine without a GPU, at TF_CPP_MIN_LOG_LEVEL=2
    b"2026-12-01 13:25:33.166526: E external/local_xla/xla/stream_executor/cuda/cuda_platform.cc:51] "
    b"failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"2026-12-01 13:25:21.157116: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:31] Could not find cuda drivers\n",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.\n",
]
OURS = [
    b"mnist_loc: error: model file not found: /nonexistent.keras\n",
    b"2026-12-01 13:25:33: a user's own dated line without a source location\n",
    b"Traceback (most recent call last):\n",
]


def test_cpp_log_lines_are_dropped_and_the_rest_kept_in_order(capfd):
    with cpp_logs_filtered():
        for line in (TF_LINES[0], OURS[0], *TF_LINES[1:3], OURS[1], *TF_LINES[3:], OURS[2]):
            os.write(2, line)
    assert capfd.readouterr().err.encode() == b"".join(OURS)


def test_lines_pass_while_the_block_runs_so_a_training_run_can_sit_inside(capfd):
    # oneDNN's "supports DT_INT64 only on platforms with AVX-512" line comes at a detector's first step.
    late = b"E0000 00:00:1796000000.123456    4242 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512.\n"
    with cpp_logs_filtered():
        os.write(2, late + OURS[0])
        for _ in range(200):  # the reader thread forwards it within the block, not at its end
            seen = capfd.readouterr().err.encode()
            if seen:
                break
            time.sleep(0.01)
        os.write(2, late)
    assert seen == OURS[0] and capfd.readouterr().err == ""


def test_malloc_arenas_are_capped_unless_the_user_chose(monkeypatch):
    import platform

    from mnist_loc.tf_runtime import cap_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas() is False, "the user's MALLOC_ARENA_MAX stands"
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert cap_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
