"""Two workers of a MultiWorkerMirroredStrategy cluster on this machine (localhost ports) against
one process, same settings and seed: seconds per epoch of each phase, the whole command's wall
time, and how far apart the two histories are. Prints the figures.

    python benchmarks/multi_worker.py [--limit 4096] [--epochs 3] [--fine-tune-epochs 1] [--workdir DIR]

Both runs use random weights (ImageNet's cannot be downloaded here) and share one feature cache,
filled beforehand by an `extract`, so neither pays for the backbone's pass over the images.
On a machine with one CPU device per worker and no accelerator, two workers split the same
cores: what this measures is the cost of the cluster's machinery, not a speed-up.
"""

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("localhost", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def command(verb: str, settings: list, run_dir: str) -> list:
    return [sys.executable, "-m", "resnet_transfer.cli", verb, *settings, "--run-dir", run_dir]


def history(run_dir: str) -> list:
    with open(os.path.join(run_dir, "history.csv"), encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def per_phase(rows: list) -> dict:
    """Median seconds per epoch of each phase, its first epoch left out where there are more (tracing)."""
    phases = {}
    for row in rows:
        phases.setdefault(row["phase"], []).append(float(row["seconds"]))
    return {phase: sorted(seconds[1:] or seconds)[len(seconds[1:] or seconds) // 2] for phase, seconds in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    arguments = parser.parse_args()
    workdir = arguments.workdir or tempfile.mkdtemp(prefix="multi-worker-bench-")
    settings = ["--weights", "none", "--backbone", "resnet50", "--limit", str(arguments.limit), "--val-size", "512",
                "--test-limit", "1024", "--epochs", str(arguments.epochs), "--fine-tune-epochs",
                str(arguments.fine_tune_epochs), "--cache-dir", os.path.join(workdir, "cache")]
    if arguments.fine_tune_epochs:  # (--unfreeze without a fine-tune phase is refused: it would change nothing)
        settings += ["--unfreeze", "conv5"]
    alone = {**os.environ, "TF_CONFIG": ""}
    subprocess.run(command("extract", settings, os.path.join(workdir, "unused")), env=alone, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    started = time.perf_counter()
    workers = [subprocess.Popen(command("train", settings, os.path.join(workdir, "cluster")),
                                env={**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                                            "task": {"type": "worker", "index": i}})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for worker in workers:
        _, err = worker.communicate()
        if worker.returncode:
            sys.exit(f"a worker failed:\n{err[-2000:]}")
    cluster_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(command("train", settings, os.path.join(workdir, "single")), env=alone, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    single_seconds = time.perf_counter() - started

    rows = {name: history(os.path.join(workdir, name)) for name in ("cluster", "single")}
    metrics = {name: json.load(open(os.path.join(workdir, name, "metrics.json"))) for name in ("cluster", "single")}
    print(f"{arguments.limit} training images, ResNet-50 at 32 px, random weights, {arguments.epochs} head + "
          f"{arguments.fine_tune_epochs} fine-tune epochs (conv5), batch 64; {os.cpu_count()} CPU cores")
    print(f"{'':28s} {'2 workers':>12s} {'1 process':>12s}")
    for phase in per_phase(rows["single"]):
        print(f"{'s per ' + phase + ' epoch':28s} {per_phase(rows['cluster'])[phase]:12.2f} "
              f"{per_phase(rows['single'])[phase]:12.2f}")
    print(f"{'command wall time (s)':28s} {cluster_seconds:12.1f} {single_seconds:12.1f}")
    for name in ("test_loss", "test_accuracy"):
        print(f"{name:28s} {metrics['cluster'][name]:12.5f} {metrics['single'][name]:12.5f}")
    largest = max(abs(float(ours[key]) - float(theirs[key])) / max(abs(float(theirs[key])), 1e-12)
                  for ours, theirs in zip(rows["cluster"], rows["single"]) for key in ("loss", "val_loss"))
    print(f"largest relative difference of loss / val_loss over {len(rows['single'])} epochs: {largest:.2e}")
    print(f"(run folders in {workdir})")


if __name__ == "__main__":
    main()
