"""The digits as synthetic lesions (issue 23, item 4; ``bench/lesions.py``): an image-level split leaks near-copies
of a lesion into train and test, the ``groups`` split does not, and the leak shows in the test score."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import load_bench
from timl.datasets import load_dataset


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """bench/lesions.py as a module, and the digits demo data (16 px) in a module folder."""
    from timl.data import write_digits

    module = load_bench("lesions")
    folder = tmp_path_factory.mktemp("lesions")
    return module, write_digits(folder / "data", size=16), folder


def _lesion_sides(dataset, lesions: pd.DataFrame) -> dict[str, set]:
    lesion_of = dict(zip(lesions["image_name"], lesions["lesion_id"]))
    return {split: {lesion_of[name] for name in dataset.frame(split)["image_name"]}
            for split in ("train", "dev", "test")}


def test_the_lesion_split_keeps_each_lesion_on_one_side_and_the_image_split_does_not(bench):
    module, digits, folder = bench
    truth = module.write_lesions(digits, folder / "small", sources=60, copies=4)
    lesions = pd.read_csv(truth.parent / module.LESIONS_NAME)
    assert len(lesions) == 240 and lesions.groupby("lesion_id").size().eq(4).all()
    assert pd.read_csv(truth).drop(columns="image_name").sum(axis=1).eq(1).all(), "one class per image"
    image_level = _lesion_sides(load_dataset(truth, "frac=0.2", seed=0), lesions)
    grouped = _lesion_sides(load_dataset(truth, "frac=0.2", seed=0, groups=module.GROUPS_CELL), lesions)
    assert len(image_level["train"] & image_level["test"]) > 20, "near-copies of test lesions in train"
    for first, second in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not grouped[first] & grouped[second], f"a lesion in {first} and {second}"


@pytest.mark.slow
def test_the_leak_is_visible_in_the_test_score(bench, tracking_uri):
    """Issue 23's number: the image-level split's test accuracy lies above the grouped split's 95% interval."""
    module, digits, folder = bench
    truth = module.write_lesions(digits, folder / "full", **module.DEMO)
    outcome = module.train(module.lesion_rows(truth, frac=0.2, epochs=module.EPOCHS, imgsize=16, seeds=[0]),
                           folder / "full")
    image_level, grouped = (module.scores(row.run_id) for row in outcome.rows)
    assert grouped["groups"] != "-/-/-" and image_level["groups"] == "-/-/-"
    assert module.leak_visible(image_level, grouped), module.markdown([(0, image_level, grouped)])
