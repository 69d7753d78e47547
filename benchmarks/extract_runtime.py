"""The frozen backbone's pass in each runtime of ``--extract-runtime``: images per second in
Keras (called batch by batch, as the feature cache runs it on a CPU), in Keras's own
``predict`` ("predict"), OpenVINO, LiteRT and ONNX Runtime, the seconds of converting and
checking each, and the largest difference from Keras's features. Prints the figures.

    python benchmarks/extract_runtime.py [--backbone resnet50] [--image-size 224] [--images 256]
                                         [--runtimes keras predict openvino tflite onnx] [--batch-size 32]
    python benchmarks/extract_runtime.py --runtimes keras --mixed-precision   # Keras in bfloat16 vs float32

Random weights (speed does not depend on their values), random pixels, avg pooling at 64 px
and above (flatten below, as the tool's "auto" pooling does for a 1x1 map). Every runtime
computes the same images once after a warm-up batch; the conversion is measured through
``runtimes.conversion.convert_and_check`` into an empty temporary cache, as a first run would pay it.
"""

import argparse
import os
import shutil
import tempfile
import time

import keras
import numpy as np

from resnet_transfer.config import ModelConfig
from resnet_transfer.model.assembly import build_model, feature_extractor
from resnet_transfer.model.precision import precision_policy
from resnet_transfer.training.batches import INFERENCE_BATCH_SIZE
from resnet_transfer.cache.extraction import predict_in_batches
from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.runtimes.choice import choose_runtime
from resnet_transfer.runtimes.conversion import relative_difference
from resnet_transfer.runtimes.keras_runtime import multiply_adds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--runtimes", nargs="+", default=["keras", "predict", "openvino", "tflite", "onnx"])
    parser.add_argument("--batch-size", type=int, default=32, help="images per call of a converted backbone")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="build the backbone under the mixed policy (Keras only; features compared with float32's)")
    arguments = parser.parse_args()
    size = arguments.image_size
    pooling = "avg" if size >= 64 else "flatten"
    model = build_model(ModelConfig(backbone=arguments.backbone, weights="none", pooling=pooling),
                        image_shape=(size, size, 3), num_classes=10)
    extractor = feature_extractor(model)
    if arguments.mixed_precision:
        with precision_policy(True) as policy:
            keras.utils.set_random_seed(0)
            mixed = feature_extractor(build_model(ModelConfig(backbone=arguments.backbone, weights="none",
                                                              pooling=pooling), image_shape=(size, size, 3), num_classes=10))
            mixed.set_weights(extractor.get_weights())
        print(f"Keras under {policy}:")
    images = np.random.default_rng(0).integers(0, 256, (arguments.images, size, size, 3), dtype=np.uint8)
    key = FeatureKey.create(backbone=arguments.backbone, weights="random:seed=0", preprocess="seed", pooling=pooling,
                            images=images, dtype="float32")
    print(f"{arguments.backbone} at {size} px, {arguments.images} images, {os.cpu_count()} cores; "
          f"{multiply_adds(extractor) / 1e9:.3f} G multiply-adds per image")
    folder = tempfile.mkdtemp(prefix="runtime-bench-")
    rates, reference = {}, None
    try:
        for runtime in arguments.runtimes:
            if runtime == "keras":
                network = mixed if arguments.mixed_precision else extractor
                run = lambda chunk: predict_in_batches(network, chunk, INFERENCE_BATCH_SIZE)  # noqa: E731
                warm = images[:INFERENCE_BATCH_SIZE]
                converted = "-"
            elif runtime == "predict":  # Keras's own predict, the yardstick (batches of 32, its default)
                run = lambda chunk: extractor.predict(chunk.astype("float32"), batch_size=32, verbose=0)  # noqa: E731
                warm, converted = images[:32], "-"
            else:
                started = time.perf_counter()
                choice = choose_runtime(runtime, extractor, cache=FeatureCache(folder), key=key, pending=[images],
                                        batch_size=arguments.batch_size)
                converted = f"{time.perf_counter() - started:.1f} s"
                run, warm = choice.runner.predict_chunk, images[: choice.runner.batch_size]
            run(warm)
            started = time.perf_counter()
            features = run(images)
            seconds = time.perf_counter() - started
            rates[runtime] = len(images) / seconds
            if reference is None:
                exact = runtime == "keras" and not arguments.mixed_precision
                reference = features if exact else predict_in_batches(extractor, images, INFERENCE_BATCH_SIZE)
            difference = relative_difference(features, reference)
            speed = "".join(f", {rates[runtime] / rates[other]:.2f}x {other}" for other in ("keras", "predict")
                            if other in rates and runtime != other)
            print(f"{runtime:<7} {rates[runtime]:7.1f} images/s{speed}; converting and checking {converted}; "
                  f"largest difference from Keras {difference:.1e} of the scale", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
