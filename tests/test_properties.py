"""Property tests (hypothesis): the TIML confidence, class weights and the split strategies hold for any input,
not only for the hand-made examples of test_classifier.py, test_datasets.py and test_split.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from timl.classifier import confidence
from timl.datasets import CLASS_WEIGHTS, compute_class_weights, load_dataset, stratified_folds, stratified_order
from timl.errors import DatasetError

# ------------------------------------------------------------------------------------------------ confidence


@st.composite
def probability_vectors(draw, min_classes: int = 2, max_classes: int = 12) -> np.ndarray:
    """A probability vector over 2..12 classes: non-negative, summing to 1 (vertices and ties included)."""
    size = draw(st.integers(min_classes, max_classes))
    kind = draw(st.sampled_from(["random", "vertex", "uniform", "few values"]))
    if kind == "vertex":
        vector = np.zeros(size)
        vector[draw(st.integers(0, size - 1))] = 1.0
        return vector
    if kind == "uniform":
        return np.full(size, 1.0 / size)
    elements = st.floats(0, 1) if kind == "random" else st.sampled_from([0.0, 0.25, 1.0])
    weights = np.array(draw(st.lists(elements, min_size=size, max_size=size)))
    assume(weights.sum() > 1e-6)
    return weights / weights.sum()


@settings(max_examples=300)
@given(probability_vectors())
def test_confidence_properties(probabilities):
    scores = confidence(probabilities)
    base = 1.0 / len(probabilities)
    assert scores.shape == probabilities.shape
    assert np.all(scores >= -1.0) and np.all(scores <= 1.0)
    assert scores[np.argmax(probabilities)] == scores.max()  # the predicted class keeps the top confidence
    assert np.all((scores > 0) == (probabilities > base))  # positive exactly above chance
    for p, score in zip(probabilities, scores):
        if p == 1.0:
            assert score == 1.0
        if p == 0.0:
            assert score == -1.0
    order = np.argsort(probabilities, kind="stable")
    ranked_p, ranked_scores = probabilities[order], scores[order]
    assert np.all(np.diff(ranked_scores) >= 0)  # monotonic in p
    apart = np.diff(ranked_p) > 1e-9  # strictly where the probabilities differ by more than rounding
    assert np.all(ranked_scores[1:][apart] > ranked_scores[:-1][apart])


@settings(max_examples=200)
@given(size=st.integers(2, 50), data=st.data())
def test_confidence_at_chance_zero_and_strictly_monotonic_between_vectors(size, data):
    assert np.all(confidence(np.full(size, 1.0 / size)) == 0.0)  # p == b gives 0
    low, high = sorted(data.draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
    assume(high - low > 1e-9)  # apart by more than rounding
    # the same class at p = low and p = high in two vectors of the same size; the others share the rest
    first = np.array([low] + [(1 - low) / (size - 1)] * (size - 1))
    second = np.array([high] + [(1 - high) / (size - 1)] * (size - 1))
    assert confidence(first)[0] < confidence(second)[0]


@settings(max_examples=100)
@given(st.lists(probability_vectors(3, 3), min_size=1, max_size=20))
def test_confidence_of_a_batch_is_that_of_each_row(rows):
    batch = np.stack(rows)
    np.testing.assert_array_equal(confidence(batch), np.stack([confidence(row) for row in rows]))


# ------------------------------------------------------------------------------------------------ class weights


@st.composite
def label_matrices(draw, single_label: bool | None = None) -> np.ndarray:
    """A (rows, classes) 0/1 matrix: one-hot rows (single-label) or any rows (multi-label); classes may be
    absent."""
    rows, classes = draw(st.integers(1, 60)), draw(st.integers(1, 8))
    if single_label is None:
        single_label = draw(st.booleans())
    if single_label:
        picks = draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows))
        return np.eye(classes)[picks]
    cells = draw(st.lists(st.integers(0, 1), min_size=rows * classes, max_size=rows * classes))
    return np.array(cells, dtype=float).reshape(rows, classes)


@settings(max_examples=300)
@given(label_matrices())
def test_computed_class_weights_are_the_documented_inverse_frequency(labels):
    weights = compute_class_weights(labels, "compute")
    counts = labels.sum(axis=0)
    assert sorted(weights) == list(range(labels.shape[1]))
    values = np.array([weights[index] for index in range(labels.shape[1])])
    assert np.all(values > 0) and np.all(values >= 1.0)
    present = counts > 0
    assert np.all(values[~present] == 1.0)  # a class absent from the train set: 1.0
    if present.any():
        most = counts.max()
        assert values[np.argmax(counts)] == 1.0  # the most frequent class at 1.0
        # inverse class frequency: every present class's weighted count equals the most frequent class's count
        np.testing.assert_allclose(values[present] * counts[present], most, rtol=1e-12)
        for i in np.flatnonzero(present):
            for j in np.flatnonzero(present):
                if counts[i] < counts[j]:
                    assert values[i] > values[j]  # a rarer class never gets a smaller weight
                elif counts[i] == counts[j]:
                    assert values[i] == values[j]


@settings(max_examples=100)
@given(label_matrices(), st.integers(2, 4), st.randoms(use_true_random=False))
def test_class_weights_depend_only_on_the_class_shares(labels, copies, random):
    order = list(range(len(labels)))
    random.shuffle(order)
    weights = compute_class_weights(labels, "compute")
    assert compute_class_weights(labels[order], "compute") == weights  # not on row order
    repeated = compute_class_weights(np.tile(labels, (copies, 1)), "compute")
    assert repeated.keys() == weights.keys()
    np.testing.assert_allclose(list(repeated.values()), list(weights.values()), rtol=1e-12)  # nor on size


@settings(max_examples=100)
@given(label_matrices())
def test_default_class_weights_are_all_one(labels):
    assert compute_class_weights(labels, "default") == {index: 1.0 for index in range(labels.shape[1])}


def test_class_weight_modes():
    assert sorted(CLASS_WEIGHTS) == ["compute", "default"]
    with pytest.raises(DatasetError, match="Expected one of: default, compute. Received: classweights='inverse'"):
        compute_class_weights(np.eye(2), "inverse")


# ------------------------------------------------------------------------------------------------ splits

MAX_IMAGES = 400


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A folder with images/ holding MAX_IMAGES empty files x0.png .. (load_dataset only looks the names up)."""
    folder = tmp_path_factory.mktemp("properties")
    (folder / "images").mkdir()
    for number in range(MAX_IMAGES):
        (folder / "images" / f"x{number}.png").touch()
    return folder


@st.composite
def single_label_tables(draw, min_rows: int = 4, max_rows: int = 80) -> pd.DataFrame:
    """A single-label ground truth: 1-5 classes with random counts (a class may have no row), unique image
    names picked from x0..x399 and the rows in random order (both from one drawn seed: quick to shrink)."""
    classes = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(0, 30), min_size=classes, max_size=classes))
    assume(min_rows <= sum(counts) <= max_rows)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    picks = rng.permutation(np.repeat(np.arange(classes), counts))
    frame = pd.DataFrame(np.eye(classes, dtype=int)[picks], columns=[f"c{index}" for index in range(classes)])
    frame.insert(0, "image_name", [f"x{number}" for number in rng.choice(MAX_IMAGES, len(picks), replace=False)])
    return frame


def _load(folder, table: pd.DataFrame, split: str, seed: int):
    path = folder / "gt.csv"
    table.to_csv(path, index=False)
    return load_dataset(str(path), split, seed=seed)


def _names(frame) -> list[str]:
    return frame["image_name"].tolist()


def _check_partition(dataset, table: pd.DataFrame) -> None:
    """train, dev and test never overlap, together are the table, and every row keeps its labels."""
    parts = [_names(dataset.train), _names(dataset.dev), _names(dataset.test)]
    together = [name for part in parts for name in part]
    assert len(together) == len(set(together)) == len(table)
    assert set(together) == set(table["image_name"])
    classes = list(dataset.class_names)
    expected = table.set_index("image_name")[classes]
    for frame in (dataset.train, dataset.dev, dataset.test):
        pd.testing.assert_frame_equal(frame.set_index("image_name")[classes], expected.loc[_names(frame)])
        assert len(frame) > 0


def _class_counts(frame: pd.DataFrame, classes) -> np.ndarray:
    return frame[list(classes)].to_numpy().sum(axis=0)


def _a_common_fraction(counts: np.ndarray, sizes: np.ndarray) -> bool:
    """What stratified_order promises of any prefix: one fraction x such that each class (of size m > 0) has
    floor(x*m) or floor(x*m) + 1 rows in the prefix, i.e. every class within one row of x*m. Such an x exists
    iff max (count-1)/m < min (count+1)/m; checked exactly, in integers."""
    kept = sizes > 0
    counts, sizes = counts[kept].astype(np.int64), sizes[kept].astype(np.int64)
    # (count_s - 1) / m_s < (count_t + 1) / m_t for every pair s, t
    return bool(np.all((counts - 1)[:, None] * sizes[None, :] < (counts + 1)[None, :] * sizes[:, None]))


SPLIT_SETTINGS = settings(max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def random_splits(draw, table: pd.DataFrame) -> str:
    """frac=F or n=N that leaves train, dev and test non-empty on ``table``."""
    total = len(table)
    if draw(st.booleans()):
        count = draw(st.integers(1, (total - 1) // 2))
        return f"n={count}"
    fraction = draw(st.floats(0.01, 0.49))
    assume(1 <= round(fraction * total) and 2 * round(fraction * total) < total)
    return f"frac={fraction:.4f}"


@SPLIT_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_random_splits_partition_and_stratify(image_folder, data, seed):
    table = data.draw(single_label_tables())
    split = data.draw(random_splits(table))
    dataset = _load(image_folder, table, split, seed)
    _check_partition(dataset, table)
    total = len(table)
    count = int(split[2:]) if split.startswith("n=") else int(round(float(split[5:]) * total))
    assert len(dataset.dev) == len(dataset.test) == count and len(dataset.train) == total - 2 * count
    classes = dataset.class_names
    sizes = _class_counts(table, classes)
    dev, test = _class_counts(dataset.dev, classes), _class_counts(dataset.test, classes)
    # dev is the first `count` rows of stratified_order, dev + test the first 2 * count: each is a stratified
    # prefix; with two classes that means strictly within one image of the proportional share (test alone, the
    # difference of the two, within two; with three or more classes a prefix can be off by more than one)
    for prefix, length in ((dev, count), (dev + test, 2 * count)):
        assert _a_common_fraction(prefix, sizes), (split, sizes.tolist(), prefix.tolist())
        if np.count_nonzero(sizes) == 2:
            assert np.all(np.abs(prefix - length * sizes / total) < 1), (split, sizes.tolist(), prefix.tolist())
    if np.count_nonzero(sizes) == 2:
        assert np.all(np.abs(test - count * sizes / total) < 2), (split, sizes.tolist(), test.tolist())
    # the same seed gives the same split, row for row
    again = _load(image_folder, table, split, seed)
    for name in ("train", "dev", "test"):
        assert _names(getattr(again, name)) == _names(getattr(dataset, name))


@settings(SPLIT_SETTINGS, max_examples=25)
@given(data=st.data())
def test_other_seeds_give_other_splits(image_folder, data):
    table = data.draw(single_label_tables(min_rows=12))
    split = data.draw(st.one_of(random_splits(table), st.just("kfold=3:0")))
    splits = set()
    for seed in range(6):
        dataset = _load(image_folder, table, split, seed)
        splits.add((tuple(sorted(_names(dataset.dev))), tuple(sorted(_names(dataset.test)))))
    assert len(splits) > 1  # six seeds on 12+ images: one split for all of them means the seed is ignored


@SPLIT_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_k_folds_partition_the_data(image_folder, data, seed):
    table = data.draw(single_label_tables())
    folds = data.draw(st.integers(2, min(6, len(table) // 2)))
    classes = [column for column in table.columns if column != "image_name"]
    sizes = _class_counts(table, classes)
    tested: list[str] = []
    for fold in range(folds):
        dataset = _load(image_folder, table, f"kfold={folds}:{fold}", seed)
        _check_partition(dataset, table)
        total, held_out = len(table), len(dataset.test)
        assert held_out in (total // folds, -(-total // folds))  # fold sizes differ by at most one
        per_class = _class_counts(dataset.test, classes)
        assert np.all((per_class == sizes // folds) | (per_class == -(-sizes // folds)))  # each class's share
        rest = total - held_out
        assert len(dataset.dev) == -(-rest // 10)  # a tenth of the other rows, rounded up
        assert _a_common_fraction(_class_counts(dataset.dev, classes), sizes - per_class)
        tested += _names(dataset.test)
    assert sorted(tested) == sorted(table["image_name"])  # each image in exactly one fold's test set


@settings(max_examples=200)
@given(labels=label_matrices(single_label=False), seed=st.integers(0, 2**31 - 1), folds=st.integers(2, 10))
def test_stratified_order_and_folds_on_any_labels(labels, seed, folds):
    """The two functions under the splits, on multi-label rows too (strata: the label combinations)."""
    strata = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
    sizes = np.bincount(strata)
    order = stratified_order(labels, seed)
    assert sorted(order.tolist()) == list(range(len(labels)))
    np.testing.assert_array_equal(order, stratified_order(labels, seed))
    for length in range(len(labels) + 1):
        assert _a_common_fraction(np.bincount(strata[order[:length]], minlength=len(sizes)), sizes)
    assignment = stratified_folds(labels, folds, seed)
    np.testing.assert_array_equal(assignment, stratified_folds(labels, folds, seed))
    assert assignment.min() >= 0 and assignment.max() < folds
    fold_sizes = np.bincount(assignment, minlength=folds)
    assert fold_sizes.max() - fold_sizes.min() <= 1
    for stratum, size in enumerate(sizes):
        per_fold = np.bincount(assignment[strata == stratum], minlength=folds)
        assert np.all((per_fold == size // folds) | (per_fold == -(-size // folds)))
