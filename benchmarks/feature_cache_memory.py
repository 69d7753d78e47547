"""Peak memory of the feature cache against the number of images.

Writes N synthetic 32x32x3 images to a memory-mapped file on disk (chunk by chunk),
then runs ``cached_features`` over them (extraction, storage, checksum) and, on the
stored memory map, one epoch of ``ArrayBatches`` reads as the head's training does.
Each N runs in a fresh process. Memory is sampled every 20 ms from /proc/self/status:
``RssAnon`` (the process's own, non-reclaimable memory) and ``RssFile`` (file pages
of the memory maps, which the kernel can drop and re-read); ``VmHWM`` is the kernel's
peak of their sum. A bounded cache keeps the first flat as N grows.

    python benchmarks/feature_cache_memory.py --images 10000 100000 1000000 --extractor small
    python benchmarks/feature_cache_memory.py --images 5000 20000 --extractor resnet50

``--extractor resnet50`` is the real frozen backbone (random weights). ``small`` is a
real Keras model with the same 2,048-float output per image but a few layers only,
so a million images finish in minutes on a CPU; the cache's memory behaviour is
the same (its extra memory is the chunk, not the backbone). Not a test.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_extractor(name: str):
    import keras

    if name == "resnet50":
        from resnet_transfer.config import ModelConfig
        from resnet_transfer.model.assembly import build_model, feature_extractor

        return feature_extractor(build_model(ModelConfig(backbone="resnet50", weights="none"), image_shape=(32, 32, 3), num_classes=10))
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.AveragePooling2D(4)(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(2048)(keras.layers.Flatten()(pooled)))


class MemorySampler(threading.Thread):
    """Records the largest RssAnon and RssFile (MiB) seen while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.running = True

    def run(self):
        while self.running:
            with open("/proc/self/status") as handle:
                for line in handle:
                    name = line.split(":")[0]
                    if name in self.peak:
                        self.peak[name] = max(self.peak[name], int(line.split()[1]) // 1024)
            time.sleep(0.02)


def measure(count: int, extractor_name: str, chunk_size: int) -> dict:
    import numpy as np

    from resnet_transfer.cache.extraction import cached_features
    from resnet_transfer.cache.keys import FeatureKey
    from resnet_transfer.cache.store import FeatureCache
    from resnet_transfer.training.batches import ArrayBatches

    sampler = MemorySampler()
    sampler.start()
    workspace = tempfile.mkdtemp(prefix="cache-memory-")
    images = np.lib.format.open_memmap(os.path.join(workspace, "images.npy"), mode="w+", dtype=np.uint8, shape=(count, 32, 32, 3))
    rng = np.random.default_rng(0)
    for start in range(0, count, chunk_size):
        stop = min(count, start + chunk_size)
        images[start:stop] = rng.integers(0, 256, size=(stop - start, 32, 32, 3), dtype=np.uint8)
    images.flush()
    images = np.load(os.path.join(workspace, "images.npy"), mmap_mode="r")
    extractor = build_extractor(extractor_name)
    started = time.perf_counter()
    key = FeatureKey.create(backbone=extractor_name, weights="random:seed=0", preprocess="seed", pooling="flatten", images=images, dtype="float32")
    features, status, backbone_seconds = cached_features(extractor, images, key=key, cache=FeatureCache(os.path.join(workspace, "cache")), chunk_size=chunk_size)
    extract_seconds = time.perf_counter() - started
    labels = np.zeros(count, dtype=np.int64)
    batches = ArrayBatches(features, labels, batch_size=64, shuffle=True)
    started = time.perf_counter()
    for index in range(len(batches)):
        batches[index]
    read_seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sampler.running = False
    sampler.join()
    shutil.rmtree(workspace)
    return {
        "images": count,
        "extractor": extractor_name,
        "chunk_size": chunk_size,
        "features_gib": features.nbytes / 2**30,
        "peak_anon_mib": sampler.peak["RssAnon"],
        "peak_file_mib": sampler.peak["RssFile"],
        "vm_hwm_mib": round(peak_mib),
        "extract_store_seconds": round(extract_seconds, 1),
        "images_per_second": round(count / backbone_seconds),
        "one_epoch_of_batch_reads_seconds": round(read_seconds, 1),
        "status": status,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--extractor", choices=("small", "resnet50"), default="small")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.one is not None:
        print(json.dumps(measure(arguments.one, arguments.extractor, arguments.chunk_size)))
        return
    for count in arguments.images:
        command = [sys.executable, __file__, "--one", str(count), "--extractor", arguments.extractor, "--chunk-size", str(arguments.chunk_size)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        print(output.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
