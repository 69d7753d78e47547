"""The frozen backbone's pass over a run's images: each split's features from the feature
cache, or computed by the chosen runtime (``runtimes``) and stored there, pooled as the
run's head pools them (the config's ``pooling``, resolved as ``heads.resolve_pooling``
does). On a cluster every worker computes its share of the chunks and the chief
assembles them.

Example:
    >>> splits, status, backbone = stored_features(model, dataset, config)
    >>> splits["train"].shape, status
    ((58000, 2048), 'miss')
"""

import logging
from dataclasses import dataclass
from typing import Optional

from resnet_transfer.config import RunConfig
from resnet_transfer.data.dataset import Dataset
from resnet_transfer.model.assembly import backbone_of, feature_extractor
from resnet_transfer.model.heads import resolve_pooling
from resnet_transfer.model.weights import weights_identity
from resnet_transfer.training.adaptation import adapted_weights_identity
from resnet_transfer.training.batches import INFERENCE_BATCH_SIZE
from resnet_transfer.training.distribution import barrier, worker_role
from resnet_transfer.cache.extraction import cached_features
from resnet_transfer.cache.keys import FeatureKey
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.runtimes.choice import choose_runtime, int8_calibration, int8_runtime_key, keyed

__all__ = ["BackbonePass", "stored_features"]

logger = logging.getLogger(__name__)


@dataclass
class BackbonePass:
    """The backbone's pass over the images of a phase's splits.

    Attributes:
        seconds: the pass itself (0 when every split was in the cache).
        runtime: what ran it ("keras", "openvino", "tflite", "onnx"; ``runtimes.choose_runtime``); None
            when every split was in the cache.
        conversion_seconds: converting the backbone and checking it in this process (0: a
            converted backbone was reused; None: none was converted).
    """

    seconds: float = 0.0
    runtime: Optional[str] = None
    conversion_seconds: Optional[float] = None

    def __add__(self, other: "BackbonePass") -> "BackbonePass":
        conversion = [value for value in (self.conversion_seconds, other.conversion_seconds) if value is not None]
        return BackbonePass(self.seconds + other.seconds, self.runtime or other.runtime,
                            sum(conversion) if conversion else None)


def stored_features(model, dataset: Dataset, config: RunConfig, *, splits: tuple = ("train", "val", "test"),
                    shard: Optional[tuple] = None, compute: bool = True) -> tuple:
    """The pooled backbone features of ``splits``, from the cache or computed and stored
    (``shard`` (i, n): only that shard's chunks, see ``cache.extraction.cached_features``), in the
    runtime ``--extract-runtime`` picks (``runtimes.choice.choose_runtime``).

    On a cluster, every worker computes its shard's chunks; once all have, the chief
    assembles the entries, and then the others read them (from a cache folder every
    worker sees; where it is not shared, a worker computes what it cannot find).

    With ``compute`` False the backbone never runs: a split the cache lacks is None (``audit``).

    Returns:
        ({split: read-only array, or None for a split whose other shards have not finished},
        "hit" if every split was cached, "partial" if a split is not complete, else "miss";
        a ``BackbonePass``).
    """
    role = worker_role()
    if role is None or shard is not None or not compute:
        return _stored_features(model, dataset, config, splits=splits, shard=shard, compute=compute)
    _, _, computed = _stored_features(model, dataset, config, splits=splits, shard=(role.index, role.count),
                                      assemble=False)
    barrier()
    if role.is_chief:
        features_of, status, more = _stored_features(model, dataset, config, splits=splits)
    barrier()
    if not role.is_chief:
        features_of, status, more = _stored_features(model, dataset, config, splits=splits)
    return features_of, status, computed + more


def _stored_entry(cache: FeatureCache, key: FeatureKey, setting: str):
    """A split's complete cache entry that ``--extract-runtime setting`` may use: its own
    runtime's (for "openvino-int8", ``int8_runtime_key``'s: ``setting`` is then that key), and
    for "auto" also a converted backbone's or Keras's (all within 1e-5; never INT8's)."""
    runtimes = ("openvino", "tflite", "onnx", "keras") if setting == "auto" else (setting,)
    for runtime in runtimes:
        features = cache.load(keyed(key, runtime))
        if features is not None:
            return features, keyed(key, runtime)
    return None, None


def _stored_features(model, dataset: Dataset, config: RunConfig, *, splits: tuple, shard: Optional[tuple] = None,
                     assemble: bool = True, compute: bool = True) -> tuple:
    pooling = resolve_pooling(config.model.pooling, tuple(backbone_of(model).output.shape[1:]))[0]
    cache = FeatureCache(config.train.cache_dir)
    extractor = feature_extractor(model)
    identity = adapted_weights_identity(weights_identity(config.model.backbone, config.model.weights, config.train.seed),
                                        dataset.x_train, config.model, seed=config.train.seed)
    keys, stored = {}, {}
    setting, calibration = config.train.extract_runtime, None
    if setting == "openvino-int8":  # (calibrated on the training images, which are part of its features' keys)
        calibration = int8_calibration(dataset.x_train if dataset.x_train is not None else
                                       getattr(dataset, f"x_{splits[0]}"))
        setting = int8_runtime_key(calibration)
    for split in splits:
        keys[split] = FeatureKey.create(
            backbone=config.model.backbone, weights=identity, preprocess=config.model.preprocess, pooling=pooling,
            images=getattr(dataset, f"x_{split}"), dtype=config.train.cache_dtype, feature_layer=config.model.feature_layer,
            precision=backbone_of(model).dtype_policy.compute_dtype,
        )
        stored[split] = _stored_entry(cache, keys[split], setting)
    pending = [getattr(dataset, f"x_{split}") for split in splits if stored[split][0] is None]
    if not compute:
        found = {split: stored[split][0] for split in splits}
        return found, "hit" if not pending else "partial", BackbonePass()
    choice = choose_runtime(config.train.extract_runtime, extractor, cache=cache, key=keys[splits[0]], pending=pending,
                            calibration=calibration)
    if pending:
        logger.info("features: the backbone runs in %s", choice.runtime)
        logger.debug("features: %s, because %s", choice.runtime, choice.reason)
    features_of, statuses = {}, []
    backbone = BackbonePass(runtime=choice.runtime if pending else None, conversion_seconds=choice.conversion_seconds)
    for split in splits:
        images = getattr(dataset, f"x_{split}")
        features, key = stored[split]
        if features is not None:
            logger.info("features of %s split (%d images): cache hit, the backbone is skipped (%s)", split, len(images),
                        cache.entry_path(key))
            features_of[split] = features
            statuses.append("hit")
            continue
        key = keyed(keys[split], setting if choice.runtime == "openvino-int8" else choice.runtime)
        features, status, seconds = cached_features(choice.runner, images, key=key, cache=cache,
                                                    batch_size=INFERENCE_BATCH_SIZE, shard=shard, assemble=assemble)
        if status == "partial":
            logger.info("features of %s split (%d images): shard %d/%d computed in %.1f s; other shards' chunks are "
                        "still missing (%s)", split, len(images), shard[0], shard[1], seconds, cache.chunks_path(key))
        elif status == "hit":
            logger.info("features of %s split (%d images): cache hit, the backbone is skipped (%s)", split, len(images), cache.entry_path(key))
        else:
            logger.info("features of %s split (%d images): computed in %s and stored in %.1f s (%s)", split,
                        len(images), choice.runtime, seconds, cache.entry_path(key))
        features_of[split] = features
        backbone.seconds += seconds
        statuses.append(status)
    overall = "partial" if "partial" in statuses else "hit" if all(s == "hit" for s in statuses) else "miss"
    return features_of, overall, backbone
