"""The data stage: from a source (MNIST, Keras data sets, .npz, folders, CSV) to a ``Dataset``.

Read top-down: ``readers`` (one per kind of source, with ``mnist`` and ``arrays``
checks) -> ``dataset.load_dataset`` (split, limit, fit, check) with ``images``
(decoding) and ``stores`` (memory-mapped image stores).
"""

# Submodules are imported by name (resnet_transfer.data.<module>): importing this package
# imports nothing else, so the plain-data registry and config need no Keras.
