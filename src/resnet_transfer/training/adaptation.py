"""AdaBN for ``train --bn-recalibrate``: the backbone's BatchNormalization statistics
recomputed on the target's training images before the head phase (``model.batch_norm``).

The sample is drawn with the run's seed, so the same run recomputes the same statistics
(``--resume``, ``extract`` ahead of ``train``), and its fingerprint goes into the weights'
part of the feature-cache key: recalibrated features never mix with the backbone's own.

Example:
    >>> adapt_batch_norm(model, dataset.x_train, config.model, seed=0)
    Recalibration(layers=53, images=500, batch_size=125)
"""

import logging
import time

import keras
import numpy as np

from resnet_transfer.config import ModelConfig
from resnet_transfer.model.assembly import backbone_of
from resnet_transfer.model.batch_norm import Recalibration, recalibrate, sample_indices
from resnet_transfer.cache.keys import fingerprint_images

__all__ = ["adapt_batch_norm", "adaptation_record", "adapted_weights_identity"]

logger = logging.getLogger(__name__)


def adapt_batch_norm(model: keras.Model, x_train: np.ndarray, config: ModelConfig, *, seed: int) -> Recalibration:
    """Recomputes the backbone's BatchNormalization statistics over a seeded sample of
    ``config.bn_images`` of ``x_train``, through the model's own preprocessing layer."""
    started = time.perf_counter()
    sample = x_train[sample_indices(len(x_train), config.bn_images, seed=seed)]
    done = recalibrate(backbone_of(model), sample, preprocess=model.get_layer("preprocessing"))
    logger.info("--bn-recalibrate: the moving statistics of %d BatchNormalization layers recomputed over %d training "
                "images (AdaBN) in %.1f s", done.layers, done.images, time.perf_counter() - started)
    return done


def adaptation_record(x_train: np.ndarray, config: ModelConfig, *, seed: int):
    """What config.json records of the recalibration (None without ``bn_recalibrate``)."""
    if not config.bn_recalibrate:
        return None
    count = len(sample_indices(len(x_train), config.bn_images, seed=seed))
    return {"method": "AdaBN", "images": count, "of": int(len(x_train)), "seed": seed}


def adapted_weights_identity(identity: str, x_train: np.ndarray, config: ModelConfig, *, seed: int) -> str:
    """The weights' identity in the feature-cache key: ``identity`` itself, or with
    ``bn_recalibrate`` that of the statistics' sample added."""
    if not config.bn_recalibrate:
        return identity
    sample = x_train[sample_indices(len(x_train), config.bn_images, seed=seed)]
    return f"{identity};bn-recalibrated:{fingerprint_images(sample)}"
