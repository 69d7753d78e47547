"""The LiteRT runtime (``--extract-runtime tflite``): a backbone converted to a ``.tflite``
model run by the ``ai-edge-litert`` interpreter (XNNPACK) on every core, batch by batch with
a fixed batch size. It ran 0.93 to 1.0x Keras's speed here, so "auto" never picks it.

Example:
    >>> runner = LiteRTRunner(os.path.join(folder, "backbone.tflite"), tuple(extractor.output_shape), 32)
    >>> features = runner.predict_chunk(images)
"""

import numpy as np

from resnet_transfer.runtimes.runner import ConvertedRunner, cores

__all__ = ["LiteRTRunner"]


class LiteRTRunner(ConvertedRunner):
    def __init__(self, path: str, output_shape: tuple, batch_size: int):
        super().__init__(output_shape, batch_size)
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path, num_threads=cores())
        details = self._interpreter.get_input_details()[0]
        self._input, self._output = details["index"], self._interpreter.get_output_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, [batch_size, *details["shape"][1:]])
        self._interpreter.allocate_tensors()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()
