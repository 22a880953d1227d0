"""What scoring by subgroup costs: :func:`timl.subgroups.score_subgroups` on a synthetic test set.

``--images`` images (``--classes`` classes, probabilities with ties at two decimals, right about 70% of the time)
in ``--columns`` columns of ISIC-like subgroups (sex: 2 values; site: 6 values; age: 6 bands), a few percent of
images without a value (``unknown``), each group scored alone with its 95% intervals from ``--resamples``
resamples (goal: under 10 s for 10,000 images, 3 columns, 2000 resamples). Also times the files (the table and
one forest plot per score), which the goal does not count.

    python bench/subgroups.py [--images 10000] [--classes 8] [--columns 3] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import harness  # noqa: F401 (first: the benchmarks' environment)
import numpy as np
from intervals import synthetic

from timl import subgroups
from timl.intervals import Bootstrap

#: The synthetic columns: name, values (bands for the numeric one) and their shares.
COLUMNS = (("sex", ("male", "female", ""), (0.5, 0.47, 0.03)),
           ("anatom_site_general", ("anterior torso", "head/neck", "lower extremity", "upper extremity",
                                    "posterior torso", "palms/soles", ""), (0.25, 0.2, 0.2, 0.15, 0.14, 0.02, 0.04)),
           ("age_approx", ("10", "35", "50", "65", "80", ""), (0.1, 0.2, 0.25, 0.25, 0.15, 0.05)))


def labels_of(images: int, columns: int, seed: int = 0) -> tuple[subgroups.SubgroupSpec, dict]:
    """The spec and each image's group, as :func:`timl.subgroups.read_subgroup_labels` gives them."""
    rng = np.random.default_rng(seed)
    chosen = (COLUMNS * columns)[:columns]
    names = [name if index < len(COLUMNS) else f"{name}{index}" for index, (name, _, _) in enumerate(chosen)]
    spec = subgroups.parse_subgroups("meta.csv:" + ",".join(
        f"{name}:0,30,45,60,75" if base == "age_approx" else name for name, (base, _, _) in zip(names, chosen)))
    labels = {}
    for column, (_, values, shares) in zip(spec.columns, chosen):
        drawn = rng.choice(values, images, p=shares).astype(object)
        known = drawn != ""
        if column.edges:
            drawn[known] = column.band_of(drawn[known].astype(float))
        drawn[~known] = subgroups.UNKNOWN
        labels[column.name] = drawn
    return spec, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=2000)
    arguments = parser.parse_args()

    y_true, y_prob = synthetic(arguments.images, arguments.classes)
    classes = [f"C{index}" for index in range(arguments.classes)]
    spec, labels = labels_of(arguments.images, arguments.columns)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        results = subgroups.score_subgroups(spec, labels, y_true, y_prob, classes,
                                            bootstrap=Bootstrap(resamples=arguments.resamples))
        times.append(time.perf_counter() - start)
    scored = sum(group.scores is not None for group in results.groups)
    print(f"{arguments.images} images, {arguments.classes} classes, {arguments.columns} columns "
          f"({len(results.groups)} groups, {scored} scored), {arguments.resamples} resamples:")
    print(f"  scores by subgroup, best of 3:  {min(times):6.2f} s (goal < 10 s; all: "
          f"{', '.join(f'{value:.2f}' for value in times)})")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        files = subgroups.write_subgroup_report(folder, results)
        print(f"  subgroups.csv and {len(files) - 1} forest plots: {time.perf_counter() - start:6.2f} s")
    print(f"  largest gap in balanced accuracy: {results.overall_gaps()['balanced_accuracy']:.4f}")


if __name__ == "__main__":
    main()
