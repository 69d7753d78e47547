"""The ``extract`` verb: a run's frozen-backbone features into the feature cache, ahead of
training, whole or one shard at a time.

``train`` extracts what it needs by itself; ``extract`` is for spreading that work: the
jobs of a job array each run ``extract --shard i/n`` with the run's settings, each
computes its chunks (``cache.extraction.cached_features``), the last to finish assembles the
cache entries, and ``train`` with the same settings then finds them (and computes any
chunk still missing itself). A killed ``extract`` goes on from its first unfinished chunk.
On a cluster (TF_CONFIG), every worker computes its chunks and the chief assembles.

Example:
    >>> statuses = extract(config, shard=(0, 4))
    >>> statuses["train"]
    'partial'
"""

import logging
from typing import Optional

from resnet_transfer.config import SPLITS, RunConfig, check_settings_take_effect
from resnet_transfer.errors import ConfigError
from resnet_transfer.model.precision import precision_policy
from resnet_transfer.training.distribution import choose_strategy, cluster_role, strategy_scope
from resnet_transfer.cache.store import FeatureCache
from resnet_transfer.training.backbone_pass import stored_features
from resnet_transfer.training.setup import prepare

__all__ = ["extract"]

logger = logging.getLogger(__name__)


def extract(config: RunConfig, *, shard: Optional[tuple] = None) -> dict:
    """Computes the features ``train`` would use for ``config`` (its shard of them) into
    the feature cache.

    Returns:
        {split: "hit" (was there), "miss" (computed, the entry is complete) or "partial"
        (this shard's chunks are stored; other shards' are still missing)}.

    Raises:
        ConfigError: settings under which ``train`` would not use stored features.
    """
    check_settings_take_effect(config)
    if config.train.feature_cache == "off":
        raise ConfigError("extract fills the feature cache, which --no-cache turns off; leave out --no-cache")
    if config.train.epochs == 0:
        raise ConfigError("with --epochs 0 there is no head phase, the only one that trains on stored features: "
                          "there is nothing to extract")
    if config.train.augment != "none" and config.train.augment_phase == "both":
        raise ConfigError("with --augment-phase both the head trains on augmented images, never on stored features: "
                          "there is nothing to extract")
    FeatureCache(config.train.cache_dir).check_writable(no_cache_hint=False)
    if shard is not None and config.train.strategy in ("auto", "multi-worker") and cluster_role() is not None:
        raise ConfigError("--shard splits the extraction among separate jobs, and so does the cluster of TF_CONFIG "
                          "among its workers: give one of them (leave out --shard, or unset TF_CONFIG)")
    strategy = choose_strategy(config.train.strategy, batch_size=config.train.batch_size, command="extract")
    with strategy_scope(strategy), precision_policy(config.train.mixed_precision):
        dataset, model, _ = prepare(config)
        statuses = {}
        for split in SPLITS:
            _, statuses[split], _ = stored_features(model, dataset, config, splits=(split,), shard=shard)
    logger.info("features %s: %s", "of every shard" if shard is None else f"of shard {shard[0]}/{shard[1]}",
                ", ".join(f"{split} {status}" for split, status in statuses.items()))
    return statuses
