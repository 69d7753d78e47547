"""The data audit: planted label flips, copies across splits and outliers are found; the
files it writes; a run's audit from its cached features; what it refuses."""

import csv
import json
import os

import numpy as np
import pytest

from resnet_transfer.audit import AUDIT_FILES, audit_features
from resnet_transfer.data.dataset import Dataset

CLASSES, DIMENSIONS = 5, 64


def _planted(seed=0):
    """Five well-separated classes of features with known faults: 10 training labels flipped,
    5 training images copied into the test split, 5 outliers (features of no class) in train."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, DIMENSIONS)) * 3

    def split(count):
        labels = np.arange(count) % CLASSES
        return centres[labels] + rng.normal(size=(count, DIMENSIONS)), labels

    (train, y_train), (val, y_val), (test, y_test) = split(400), split(100), split(100)
    images = {name: rng.integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)
              for name, count in (("train", 400), ("val", 100), ("test", 100))}
    flipped = np.arange(0, 400, 40)  # 10 images: label + 1
    y_given = y_train.copy()
    y_given[flipped] = (y_given[flipped] + 1) % CLASSES
    outliers = np.arange(5, 400, 80)[:5]  # 5 images whose features point nowhere near a class
    train[outliers] = rng.normal(size=(5, DIMENSIONS)) * 3 + 25 * np.eye(DIMENSIONS)[10:15]
    copies = np.arange(7, 400, 80)[:5]  # 5 training images copied into the test split (pixels and features)
    for place, source in enumerate(copies):
        test[place], images["test"][place], y_test[place] = train[source], images["train"][source], y_given[source]
    dataset = Dataset(images["train"], y_given, images["val"], y_val, images["test"], y_test,
                      class_names=tuple(f"class {index}" for index in range(CLASSES)),
                      ids={split: [f"x_{split}[{index}]" for index in range(count)]
                           for split, count in (("train", 400), ("val", 100), ("test", 100))})
    features = {"train": train.astype("float32"), "val": val.astype("float32"), "test": test.astype("float32")}
    return features, dataset, {"flipped": set(flipped), "outliers": set(outliers), "copies": set(copies)}


@pytest.fixture(scope="module")
def planted_audit(tmp_path_factory):
    features, dataset, truth = _planted()
    folder = str(tmp_path_factory.mktemp("audit"))
    summary = audit_features(features, dataset, folder, title="planted")
    with open(os.path.join(folder, "audit.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    return folder, summary, rows, truth


def test_the_audit_finds_the_flipped_labels_with_their_true_class(planted_audit):
    _, _, rows, truth = planted_audit
    issues = {int(row["path"][len("x_train["):-1]): row for row in rows
              if row["kind"] == "label_issue" and row["split"] == "train"}
    flipped_found = set(issues) & truth["flipped"]
    assert len(flipped_found) >= 8  # recall >= 0.8
    assert len(flipped_found) / len(issues) >= 0.6  # precision
    for index in flipped_found:  # the suggestion is the class the image was drawn from
        assert issues[index]["suggested_label"] == f"class {index % CLASSES}"


def test_every_copy_across_splits_is_leakage_with_its_partner(planted_audit):
    _, _, rows, truth = planted_audit
    leaks = {(row["path"], row["partner_path"]) for row in rows if row["kind"] == "leakage"}
    for place, source in enumerate(sorted(truth["copies"])):
        assert (f"x_test[{place}]", f"x_train[{source}]") in leaks
    assert all(float(row["score"]) == 1.0 for row in rows if row["kind"] == "leakage"
               and row["path"].startswith("x_test[") and int(row["path"][7:-1]) < 5)


def test_the_outliers_are_flagged_first(planted_audit):
    _, _, rows, truth = planted_audit
    outliers = [int(row["path"][len("x_train["):-1]) for row in rows if row["kind"] == "outlier"
                and row["split"] == "train"]
    assert set(outliers[: len(truth["outliers"])]) == truth["outliers"]  # the most certain are the planted ones


def test_the_audit_writes_its_files_and_a_list_train_can_exclude(planted_audit):
    folder, summary, rows, _ = planted_audit
    assert sorted(os.listdir(folder)) == sorted(AUDIT_FILES)
    assert list(rows[0]) == ["path", "split", "kind", "score", "given_label", "suggested_label", "partner_path"]
    with open(os.path.join(folder, "audit.json")) as handle:
        assert json.load(handle)["counts"] == summary["counts"]
    from resnet_transfer.data.exclusion import read_sample_list

    listed = read_sample_list(os.path.join(folder, "exclude.txt"))
    assert set(listed) == {row["path"] for row in rows} and len(listed) == len(set(listed)) == summary["exclude_list"]
    with open(os.path.join(folder, "audit.html")) as handle:
        page = handle.read()
    assert "Label issues (" in page and "Leakage across splits (" in page and "data:image/png;base64," in page


@pytest.mark.slow
def test_audit_of_a_run_reads_its_cached_features_and_the_report_links_the_page(mnist_run, tmp_path, capsys):
    import shutil

    from resnet_transfer.cli import main

    run_dir = str(tmp_path / "run")  # a copy: the shared run stays as train left it (its cache stays where it is)
    shutil.copytree(mnist_run.run_dir, run_dir)
    assert main(["audit", run_dir]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["audit"] == os.path.join(run_dir, "audit.html")
    for name in AUDIT_FILES:
        assert os.path.isfile(os.path.join(run_dir, name))
    with open(os.path.join(run_dir, "report.html")) as handle:
        report = handle.read()
    assert 'href="audit.html"' in report and "Map of the features" in report
    assert main(["audit", run_dir]) == 0  # (again: the audit's files are replaced)


@pytest.mark.slow
def test_audit_refuses_a_run_without_cached_features_and_flags_beside_a_run(small_config, tmp_path, capsys):
    from resnet_transfer.cli import main
    from resnet_transfer.training.train import train

    run = train(small_config(tmp_path / "run", epochs=1, feature_cache="off"))
    for arguments, expected in (([run.run_dir], "not in the feature cache"),
                                ([run.run_dir, "--backbone", "resnet101"], "leave out --backbone"),
                                ([str(tmp_path)], "no finished run"),
                                (["--extract"], "go with audit RUN_DIR")):
        assert main(["audit", *arguments]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and expected in error[0], error
    assert not os.path.exists(os.path.join(run.run_dir, "audit.csv"))
