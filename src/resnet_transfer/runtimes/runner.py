"""What the runtimes' runners share: the cores a runtime's threads may use (``cores``), and
``ConvertedRunner``, the base of a converted backbone's runner, which runs a chunk of images
batch by batch through the runtime and pads the last batch (the converted models take fixed
shapes). A runner's ``predict_chunk`` is what ``cache.extraction.predict_in_batches`` calls
for any extractor that is not a Keras model.

Example:
    >>> runner = LiteRTRunner(path, output_shape=(None, 2048), batch_size=32)  # a ConvertedRunner
    >>> features = runner.predict_chunk(images)
"""

import os

import numpy as np

__all__ = ["cores", "ConvertedRunner"]


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ConvertedRunner:
    """A converted extractor run batch by batch; the last batch is padded (fixed shapes)."""

    def __init__(self, output_shape: tuple, batch_size: int):
        self.output_shape, self.batch_size = output_shape, batch_size

    def predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype="float32")
        outputs = []
        for start in range(0, len(chunk), self.batch_size):
            batch = chunk[start : start + self.batch_size]
            padding = self.batch_size - len(batch)
            if padding:
                batch = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
            outputs.append(self._run(np.ascontiguousarray(batch))[: len(batch) - padding])
        return self._joined(outputs)

    def _joined(self, outputs: list) -> np.ndarray:
        return np.concatenate(outputs) if outputs else np.zeros((0, *self.output_shape[1:]), "float32")
