"""Does ``--lr-decay`` (layer-wise learning-rate decay) help a fine-tuned transfer? A fixed offline protocol.

The protocol, fixed before the runs (issue 26): benchmarks/interpolation.py's fine-tuned setting with the
backbone pretrained on digits 0-4 (``--weights``: transfer_gain.py's WORKDIR/digits04.weights.h5), on digits
5-9 in the low-data regime (the first 500 training images; tested on all 4,861 test images of digits 5-9):
ResNet-50, a linear head on average-pooled features for 30 epochs at 1e-3 (cached), then every layer for 8
epochs at 1e-4, BatchNormalization in inference mode; seeds 0, 1 and 2. One variant: ``--lr-decay 0.5``
(conv5 at 5e-5, conv4 at 2.5e-5, ..., the stem at 3.1e-6; about fastai's ``slice(lr/30, lr)`` over five
groups). The baseline is the same setting without it: the fine-tuned model's own test accuracy that
interpolation.py's runs record (``interpolation.fine_tuned_test_accuracy``, the run before interpolating,
which trains exactly as a run without ``--interpolate``); pass their folder as ``--baseline-dir``.

Prints a Markdown table.

Usage:
    python benchmarks/layer_decay.py --weights /tmp/tg/digits04.weights.h5 --workdir /tmp/decay --cache-dir /tmp/tg/cache --baseline-dir /tmp/wise
"""

import os
import statistics

import _runs

SEEDS = (0, 1, 2)
DECAY = "0.5"
FINE_TUNED = ["--backbone", "resnet50", "--classes", "5,6,7,8,9", "--limit", "500", "--head", "linear", "--pooling", "avg",
              "--epochs", "30", "--fine-tune-epochs", "8", "--fine-tune-lr", "1e-4"]  # interpolation.py's


def run(arguments, seed: int) -> dict:
    return _runs.metrics(_runs.train(os.path.join(arguments.workdir, f"decay{DECAY}-seed{seed}"),
                                     ["--weights", arguments.weights, *FINE_TUNED, "--lr-decay", DECAY,
                                      "--seed", str(seed), "--cache-dir", arguments.cache_dir]))


def _fine_tune_epoch_seconds(metrics: dict) -> float:
    phase = next(phase for phase in metrics["phases"] if phase["name"] == "fine-tune")
    return phase["train_seconds"] / phase["epochs"]


def main() -> None:
    parser = _runs.parser(__doc__.splitlines()[0])
    parser.add_argument("--baseline-dir", required=True, help="interpolation.py's WORKDIR (its pretrained runs)")
    arguments = _runs.parse(parser)
    print(f"| seed | fine-tuned | with --lr-decay {DECAY} | gain | seconds per fine-tune epoch (without, with) |")
    print("| --- | --- | --- | --- | --- |")
    gains = []
    for seed in SEEDS:
        plain = _runs.metrics(os.path.join(arguments.baseline_dir, f"pretrained-seed{seed}"))
        baseline = plain["interpolation"]["fine_tuned_test_accuracy"]
        metrics = run(arguments, seed)
        tuned = metrics["test_accuracy"]
        gains.append(tuned - baseline)
        print(f"| {seed} | {baseline:.2%} | {tuned:.2%} | {100 * (tuned - baseline):+.2f} | "
              f"{_fine_tune_epoch_seconds(plain):.1f}, {_fine_tune_epoch_seconds(metrics):.1f} |", flush=True)
    print(f"| mean | | | **{100 * statistics.mean(gains):+.2f}** | |")


if __name__ == "__main__":
    main()
