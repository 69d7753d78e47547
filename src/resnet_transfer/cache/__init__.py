"""The feature cache: a folder of entries, each a frozen backbone's features for one set of
images (``store``, ``extraction``) or a backbone converted for another runtime
(``converted``), named by the digest of what they depend on (``keys``); ``admin`` lists,
verifies and prunes them, and ``folders`` holds what both sides share (the default folder,
writers' tags, atomic removal). Nothing is re-exported here: import from the submodules,
so that ``resnet-transfer cache`` (``admin``) does not import Keras.
"""

# Submodules are imported by name (resnet_transfer.cache.<module>).
