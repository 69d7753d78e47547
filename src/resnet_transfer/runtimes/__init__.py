"""Runtimes for the frozen backbone's pass: Keras, OpenVINO, LiteRT or ONNX Runtime.
``choice`` picks one per pass (``choose_runtime``, the "auto" policy); ``conversion`` converts
the backbone for a runtime and checks it against Keras; ``openvino``, ``litert`` and ``onnx``
run a converted backbone (on ``runner``'s batch-by-batch base), and ``keras_runtime``
counts a backbone's multiply-adds (for the benchmarks). Converted backbones are kept in the feature cache
(``cache.converted``). Nothing is re-exported here: import from the submodules.
"""

# Submodules are imported by name (resnet_transfer.runtimes.<module>).
