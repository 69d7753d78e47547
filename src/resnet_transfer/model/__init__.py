"""The model stage: backbone registry, weights, preprocessing, heads and assembly.

Read top-down: ``registry`` (what each backbone is) -> ``weights`` (where its
weights come from) -> ``backbone`` and ``preprocessing`` -> ``heads`` ->
``assembly`` (``build_model``: raw pixels -> preprocessing -> frozen backbone -> head).
"""

# Submodules are imported by name (resnet_transfer.model.<module>): importing this package
# imports nothing else, so the plain-data registry and config need no Keras.
