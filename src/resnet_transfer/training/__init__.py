"""The training stage: ``batches`` -> ``resnet_transfer.cache`` (extraction and cache) -> ``fitting``
(the two ways to fit the head) -> ``train`` (the steps of a run, into a run folder).
"""

# Submodules are imported by name (resnet_transfer.training.<module>).
