"""What an audit finds in a data set's features: each check works on arrays only (the
features the frozen backbone computed, the labels, the images for their hashes).

- ``out_of_sample_probabilities``: every image's class probabilities from a model that
  never saw it: k-fold cross-validation of a logistic regression on the training
  features (scikit-learn's ``cross_val_predict``); val and test images from one fit on
  all training images;
- ``label_issues``: confident learning (Northcutt et al. 2021) on those probabilities,
  with ``cleanlab.filter.find_label_issues``, ranked by cleanlab's self-confidence;
- ``duplicates``: the same pixels (a hash) first, then nearest neighbours (scikit-learn's,
  ``nearest_training_images``) whose features are far closer than neighbours usually are
  (``DUPLICATE_FRACTION``); a pair across splits is leakage;
- ``outliers``: images far from every class: the Mahalanobis distance to the nearest class
  mean (Lee et al. 2018), beyond Tukey's far-out fence of the training images' distances;
- ``overlapping_classes``: ``cleanlab.dataset.find_overlapping_classes`` on the
  training images' out-of-sample probabilities;
- ``feature_map``: a t-SNE of a sample (scikit-learn's ``TSNE``).

The nearest-neighbour searches and the classifier work in a reduced space: the
features scaled to unit length, projected on their first ``REDUCED_DIMENSIONS``
principal components (fitted on the training split, without labels), and scaled to
unit length again. Similarities of candidate pairs are then measured on the full features.

Example:
    >>> reduced = reduce_features(features)
    >>> probabilities = out_of_sample_probabilities(reduced, labels)
"""

import hashlib
import logging
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
from cleanlab.dataset import find_overlapping_classes
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

__all__ = ["DUPLICATE_FRACTION", "FOLDS", "REDUCED_DIMENSIONS", "Finding", "duplicates", "feature_map",
           "label_issues", "nearest_training_images", "out_of_sample_probabilities", "outliers", "overlapping_classes",
           "reduce_features"]

logger = logging.getLogger(__name__)

REDUCED_DIMENSIONS = 128
PCA_SAMPLE = 10000  # training images the projection is fitted on (fitting on 58,000 took 19 s, on 10,000 9 s)
FOLDS = 5
# a near-duplicate's cosine distance, as a share of the median distance between a training image and its
# nearest neighbour (on the benchmark's MNIST, pairs below 0.1 were all copies; at 0.2 there were 249)
DUPLICATE_FRACTION = 0.1
OUTLIER_FENCE = 3.0  # Tukey's far-out fence: beyond Q3 + 3 IQR
SPLITS = ("train", "val", "test")


@dataclass
class Finding:
    """One flagged image.

    Attributes:
        split, index: where it is (a row of that split).
        kind: "label_issue", "duplicate" (its partner is in the same split), "leakage" (in
            another split), or "outlier".
        score: how sure, from 0 to 1, higher first: 1 - cleanlab's label quality, the
            pair's cosine similarity (1 for the same pixels), or an outlier's
            1 - exp(-distance / median distance).
        suggested: for a label issue, the class the out-of-sample probabilities favour.
        partner: for a duplicate or leakage, (split, index) of the other image.
    """

    split: str
    index: int
    kind: str
    score: float
    suggested: Optional[int] = None
    partner: Optional[tuple] = None


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def reduce_features(features: dict, *, dimensions: int = REDUCED_DIMENSIONS, seed: int = 0) -> dict:
    """{split: unit-length rows in the reduced space} (see the module's docstring)."""
    train = _unit(features["train"].reshape(len(features["train"]), -1))
    sample = train[np.sort(np.random.default_rng(seed).permutation(len(train))[:PCA_SAMPLE])]
    components = min(dimensions, train.shape[1], len(sample))
    projection = PCA(n_components=components, svd_solver="randomized" if components < min(sample.shape) else "full",
                     random_state=seed).fit(sample)
    return {split: _unit(projection.transform(_unit(rows.reshape(len(rows), -1)))) if len(rows) else
            np.zeros((0, components), np.float32) for split, rows in features.items()}


def _classifier(seed: int) -> LogisticRegression:
    # (tol 1e-3: a fit of 46,000 images took 4.8 s instead of 9.8, its held-out accuracy 0.887 instead of 0.889)
    return LogisticRegression(C=1.0, max_iter=100, tol=1e-3, random_state=seed)


def out_of_sample_probabilities(reduced: dict, labels: dict, *, folds: int = FOLDS, seed: int = 0) -> dict:
    """{split: class probabilities of each image from a classifier that did not train on it}.

    The training split's come from ``folds``-fold cross-validation (stratified, seeded); a
    class with fewer images than folds gets fewer folds. Columns follow the class indices
    0 to max label (a class with no training image gets probability 0).
    """
    train, y = reduced["train"], np.asarray(labels["train"])
    classes = int(max(int(np.max(values)) for values in labels.values() if len(values))) + 1
    smallest = int(np.min(np.bincount(y)[np.bincount(y) > 0]))
    splitter = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a fold that stops at max_iter: the probabilities are still usable)
        held_out = cross_val_predict(_classifier(seed), train, y, cv=splitter, method="predict_proba")
        fitted = _classifier(seed).fit(train, y)
    probabilities = {"train": _all_columns(held_out, np.unique(y), classes)}
    for split in reduced:
        if split != "train":
            probabilities[split] = _all_columns(fitted.predict_proba(reduced[split]) if len(reduced[split]) else
                                                np.zeros((0, len(fitted.classes_))), fitted.classes_, classes)
    return probabilities


def _all_columns(probabilities: np.ndarray, present: np.ndarray, classes: int) -> np.ndarray:
    full = np.zeros((len(probabilities), classes), np.float32)
    full[:, present] = probabilities
    return full


def label_issues(labels: np.ndarray, probabilities: np.ndarray, split: str) -> list:
    """The images of one split whose label is probably wrong (cleanlab's confident learning),
    most certain first."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) < 2 * probabilities.shape[1]:
        return []  # (too few images for cleanlab's per-class noise rates)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    return sorted((Finding(split, int(index), "label_issue", float(1 - quality[index]),
                           suggested=int(np.argmax(probabilities[index])))
                   for index in np.flatnonzero(flagged)), key=lambda finding: -finding.score)


def _pixel_digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest()


def nearest_training_images(reduced: dict) -> dict:
    """{split: (distances, indices)} of each image's nearest training image in the reduced space
    (a training image's other than itself), and "test-val": each test image's nearest
    validation image; scikit-learn's brute-force search."""
    found = {}
    if len(reduced["train"]) >= 2:
        search = NearestNeighbors(n_neighbors=1).fit(reduced["train"])
        found["train"] = search.kneighbors()  # (no query: each training image's nearest but itself)
        for split in ("val", "test"):
            if len(reduced.get(split, ())):
                found[split] = search.kneighbors(reduced[split])
    if len(reduced.get("test", ())) and len(reduced.get("val", ())):
        found["test-val"] = NearestNeighbors(n_neighbors=1).fit(reduced["val"]).kneighbors(reduced["test"])
    return found


def duplicates(images: dict, features: dict, nearest: dict, *, fraction: float = DUPLICATE_FRACTION) -> list:
    """Pairs of images with the same pixels, then pairs of nearest neighbours (``nearest``:
    ``nearest_training_images``) whose full features' cosine distance is at most ``fraction``
    of the median one between a training image and its nearest neighbour: each pair once, as
    a finding on its later image (in split order train, val, test, then by index) with the
    earlier one as partner. The score is the pair's cosine similarity (1: the same pixels).

    The threshold is relative because features differ in scale: with a random backbone,
    MNIST's nearest neighbours are at a median cosine distance of 0.01, so an absolute
    similarity of 0.995 flagged 6,000 pairs of distinct digits.
    """
    found, seen_pairs = [], set()

    def add(first: tuple, second: tuple, similarity: float) -> None:
        earlier, later = sorted((first, second), key=lambda place: (SPLITS.index(place[0]), place[1]))
        if earlier == later or (earlier, later) in seen_pairs:
            return
        seen_pairs.add((earlier, later))
        kind = "duplicate" if earlier[0] == later[0] else "leakage"
        found.append(Finding(later[0], later[1], kind, float(min(similarity, 1.0)), partner=earlier))

    first_of = {}
    for split in SPLITS:
        for index, image in enumerate(images.get(split, ())):
            digest = _pixel_digest(image)
            if digest in first_of:
                add(first_of[digest], (split, index), 1.0)
            else:
                first_of[digest] = (split, index)
    full = {split: _unit(rows.reshape(len(rows), -1)) for split, rows in features.items()}
    similarities = {}
    for name, (_, indices) in nearest.items():
        split, reference = ("test", "val") if name == "test-val" else (name, "train")
        similarities[name] = np.einsum("ij,ij->i", full[split], full[reference][indices[:, 0]])
    if "train" not in similarities:
        return sorted(found, key=lambda finding: -finding.score)
    limit = fraction * float(np.median(1 - similarities["train"]))
    for name, (_, indices) in nearest.items():
        split, reference = ("test", "val") if name == "test-val" else (name, "train")
        for index in np.flatnonzero(1 - similarities[name] <= limit):
            add((split, int(index)), (reference, int(indices[index, 0])), float(similarities[name][index]))
    return sorted(found, key=lambda finding: -finding.score)


def outliers(reduced: dict, labels: dict) -> tuple:
    """(the flagged images, most certain first; {split: every image's distance to the nearest class}).

    "Far from every class": the Mahalanobis distance of an image's reduced features to the
    nearest class mean, under one covariance shared by the classes (Lee et al. 2018, "A simple
    unified framework for detecting out-of-distribution samples"), estimated on the training
    images around their class means with scikit-learn's ``LedoitWolf``. An image beyond Tukey's
    far-out fence of the training images' distances, Q3 + 3 IQR, is flagged; its score is
    ``1 - exp(-distance / median distance)``. (A distance to the nearest training images missed
    every planted outlier of the benchmark: outliers that come in groups are each other's
    nearest neighbours.)
    """
    train, given = reduced["train"], np.asarray(labels["train"])
    classes = np.unique(given)
    if len(train) <= train.shape[1] or len(classes) < 2:
        return [], {}
    means = np.stack([train[given == label].mean(axis=0) for label in classes])
    precision = LedoitWolf().fit(train - means[np.searchsorted(classes, given)]).precision_
    whiten = np.linalg.cholesky(precision)  # (x - m) P (x - m) = |(x - m) L|^2

    def distance(rows: np.ndarray) -> np.ndarray:
        whitened, centres = rows @ whiten, means @ whiten
        squared = (whitened ** 2).sum(axis=1)[:, None] - 2 * whitened @ centres.T + (centres ** 2).sum(axis=1)[None]
        return np.sqrt(np.maximum(squared.min(axis=1), 0))

    distances = {split: distance(rows) for split, rows in reduced.items() if len(rows)}
    low, high = np.percentile(distances["train"], [25, 75])
    fence = high + OUTLIER_FENCE * (high - low)
    scale = max(float(np.median(distances["train"])), 1e-12)
    found = [Finding(split, int(index), "outlier", float(1 - np.exp(-values[index] / scale)))
             for split, values in distances.items() for index in np.flatnonzero(values > fence)]
    return sorted(found, key=lambda finding: -finding.score), distances


def overlapping_classes(labels: np.ndarray, probabilities: np.ndarray, class_names: tuple, *, top: int = 5) -> list:
    """The pairs of classes the out-of-sample probabilities confuse most (cleanlab's
    ``find_overlapping_classes``): [{"class_a", "class_b", "images", "joint_probability"}]."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = find_overlapping_classes(labels=labels, pred_probs=probabilities, class_names=list(class_names))
    rows = []
    for _, row in table.head(top).iterrows():
        if row["Num Overlapping Examples"] > 0:
            rows.append({"class_a": str(row["Class Name A"]), "class_b": str(row["Class Name B"]),
                         "images": int(row["Num Overlapping Examples"]),
                         "joint_probability": float(row["Joint Probability"])})
    return rows


def feature_map(reduced: dict, *, flagged: list, sample: int = 2000, seed: int = 0) -> tuple:
    """A 2-D t-SNE of a seeded sample of every split's images (every flagged image among
    them, up to half the sample): ([(split, index)], N x 2 coordinates)."""
    rng = np.random.default_rng(seed)
    places = [(split, index) for split in SPLITS for index in range(len(reduced.get(split, ())))]
    chosen = list(dict.fromkeys((finding.split, finding.index) for finding in flagged))[: sample // 2]
    taken = set(chosen)
    rest = [place for place in places if place not in taken]
    order = rng.permutation(len(rest))[: max(0, sample - len(chosen))]
    chosen += [rest[index] for index in sorted(order)]
    if len(chosen) < 5:
        return chosen, np.zeros((len(chosen), 2), np.float32)
    rows = np.stack([reduced[split][index] for split, index in chosen])
    embedding = TSNE(n_components=2, init="pca", perplexity=min(30.0, (len(rows) - 1) / 3), random_state=seed,
                     learning_rate="auto")
    with threadpool_limits(limits=1):  # (its OpenMP threads took 7x longer than one, measured on 2 busy cores)
        return chosen, embedding.fit_transform(rows).astype(np.float32)
