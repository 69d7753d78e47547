import csv
import os
import shutil

import numpy as np
import pytest

from resnet_transfer.report import REPORT_FILES, compute_test_metrics, plot_curves, write_report

CLASSES = ("cat", "dog", "fox")


@pytest.fixture
def report_dir(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 3))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([0] * 25 + [1] * 10 + [2] * 5)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    history = {"loss": [1.0, 0.8], "accuracy": [0.4, 0.5], "val_loss": [1.1, 0.9], "val_accuracy": [0.3, 0.45]}
    plot_curves(history, str(tmp_path / "curves.png"))
    metrics = compute_test_metrics(probabilities, labels)
    write_report(str(tmp_path), probabilities=probabilities, labels=labels, images=images,
                 class_names=CLASSES, metrics=metrics, settings={"config": {"model": {"backbone": "resnet50"}}})
    return tmp_path, probabilities, labels


def test_report_files_and_per_class_support(report_dir):
    folder, probabilities, labels = report_dir
    assert all((folder / name).is_file() for name in REPORT_FILES)
    with open(folder / "classification_report.csv") as handle:
        rows = {row["class"]: row for row in csv.DictReader(handle)}
    assert [int(rows[name]["support"]) for name in CLASSES] == [25, 10, 5]
    recall_cat = np.mean(np.argmax(probabilities[labels == 0], axis=1) == 0)
    assert float(rows["cat"]["recall"]) == pytest.approx(recall_cat, abs=1e-4)


def test_metrics_match_keras_evaluate_definitions():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    metrics = compute_test_metrics(probabilities, np.array([0, 1]))
    assert metrics["test_accuracy"] == 0.5
    assert metrics["test_loss"] == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2, rel=1e-5)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_page_renders_in_headless_chromium_without_console_errors(report_dir):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    folder, _, _ = report_dir
    problems = []
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=_chromium(), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        page = browser.new_page()
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto("file://" + os.path.abspath(folder / "report.html"))
        page.wait_for_load_state("load")
        loaded = page.evaluate("Array.from(document.images).map(image => image.complete && image.naturalWidth > 0)")
        headings = page.locator("h2").all_inner_texts()
        page.screenshot(path=str(folder / "report-screenshot.png"), full_page=True)
        browser.close()
    assert problems == []
    assert loaded == [True, True, True]
    assert {"Training curves", "Confusion matrix", "Largest-loss test images", "Metrics"} <= set(headings)
