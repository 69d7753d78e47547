"""The model stage: weights, backbone, preprocessing, heads and assembly.

Read top-down, after ``resnet_transfer.registry`` (what each backbone is): ``weights`` (where its
weights come from) -> ``backbone`` and ``preprocessing`` -> ``heads`` ->
``assembly`` (``build_model``: raw pixels -> preprocessing -> frozen backbone -> head).
"""

# Submodules are imported by name (resnet_transfer.model.<module>); importing this package
# imports nothing else.
