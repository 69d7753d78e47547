"""Test setup: everything offline, on the CPU, with caches in a temporary folder.

KERAS_HOME is read by Keras when it is imported, so it is set here, before any
test module imports Keras: the tests never see (or write) the user's ~/.keras.
"""

import os
import shutil
import socket
import tempfile

_ROOT = tempfile.mkdtemp(prefix="resnet-transfer-tests-")
os.environ["KERAS_HOME"] = os.path.join(_ROOT, "keras")
os.environ["RESNET_TRANSFER_CACHE_DIR"] = os.path.join(_ROOT, "features")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_ROOT, ignore_errors=True)


def network_reachable(host: str = "storage.googleapis.com") -> bool:
    """Whether Keras's download host resolves (it does not on our machines)."""
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


@pytest.fixture
def small_config():
    """A few hundred MNIST images, random weights, 2 epochs: the shape of the seed recipe, fast."""
    from resnet_transfer.config import RunConfig

    def make(run_dir, **train):
        return RunConfig.from_dict(
            {
                "data": {"limit": 256, "val_size": 64, "test_limit": 128},
                "model": {"weights": "none"},
                "train": {"epochs": 2, **train},
                "run_dir": str(run_dir),
            }
        )

    return make
