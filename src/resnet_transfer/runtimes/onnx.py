"""The ONNX Runtime runtime (``--extract-runtime onnx``): a backbone converted to ONNX
(through tf2onnx) run by ONNX Runtime's CPU execution provider on every core, batch by batch
with a fixed batch size. It ran 0.93 to 1.0x Keras's speed here, so "auto" never picks it.

Example:
    >>> runner = OnnxRunner(os.path.join(folder, "backbone.onnx"), tuple(extractor.output_shape), 32)
    >>> features = runner.predict_chunk(images)
"""

import numpy as np

from resnet_transfer.runtimes.runner import ConvertedRunner, cores

__all__ = ["OnnxRunner"]


class OnnxRunner(ConvertedRunner):
    def __init__(self, path: str, output_shape: tuple, batch_size: int):
        super().__init__(output_shape, batch_size)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = cores()
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0]
