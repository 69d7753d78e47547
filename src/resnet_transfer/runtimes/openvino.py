"""The OpenVINO runtime: a backbone converted to OpenVINO's IR (``backbone.xml`` with its
weights in ``backbone.bin``) run by OpenVINO's CPU plugin, in float32 and in its throughput
mode, with the batch dimension left dynamic. "auto"'s runtime (``choice.AUTO_RUNTIME``): it
ran the backbone's pass 1.14 to 1.17x as fast as Keras here. OpenVINO's own code runs inside
``signals.native_threads_without_sigint``: its threads never take Ctrl-C, and the signal
stack it replaces is put back.

Example:
    >>> runner = OpenVINORunner(os.path.join(folder, "backbone.xml"), tuple(extractor.output_shape), 256)
    >>> features = runner.predict_chunk(images)
"""

import numpy as np

from resnet_transfer.runtimes.runner import ConvertedRunner, cores
from resnet_transfer.signals import native_threads_without_sigint

__all__ = ["OpenVINORunner"]


class OpenVINORunner(ConvertedRunner):
    """OpenVINO's CPU plugin in float32 (its default is bfloat16 on CPUs that have it) and in
    its throughput mode: a queue of requests, one batch in flight per stream of cores. The
    batch dimension stays dynamic, so the last batch is not padded (at 32 px, batches of 256
    with a dynamic batch ran 431 to 441 images/s here, fixed ones 406 to 422)."""

    def __init__(self, path: str, output_shape: tuple, batch_size: int):
        super().__init__(output_shape, batch_size)
        import openvino

        with native_threads_without_sigint():
            self._compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                         "PERFORMANCE_HINT": "THROUGHPUT",
                                                                         "INFERENCE_NUM_THREADS": cores()})
            self._queue = openvino.AsyncInferQueue(self._compiled)

    def predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        chunk, outputs = np.asarray(chunk, dtype="float32"), []

        def finished(request, index):
            outputs[index] = request.get_output_tensor(0).data.copy()

        self._queue.set_callback(finished)
        for start in range(0, len(chunk), self.batch_size):
            outputs.append(None)
            with native_threads_without_sigint():  # Ctrl-C is raised between batches
                self._queue.start_async({0: np.ascontiguousarray(chunk[start : start + self.batch_size])},
                                        len(outputs) - 1)
        with native_threads_without_sigint():
            self._queue.wait_all()
        return self._joined(outputs)
