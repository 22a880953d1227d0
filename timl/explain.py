"""``python -m timl.explain``: explain classifications as the original TIML's grey / heatmap / composite images.

For one image or every image of a test dataframe, with one or more methods (Grad-CAM, Grad-CAM++, Score-CAM,
SmoothGrad, RISE). For a test dataframe it also draws grid pages: each image, its composite per method, the
predicted and (when the dataframe has class columns) the true class. ``--log-to-run`` stores everything as
artifacts of an MLflow run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click
import numpy as np

from timl.cli import command, progress_printer, setup_logging, tracking_uri_option, user_errors
from timl.errors import ModelError
from timl.xai import DEFAULT_EXPLAINER, list_explainers

logger = logging.getLogger(__name__)

ROWS_PER_PAGE = 6

#: The explanation methods --method accepts (the explainer registry's names; importing it loads no TensorFlow).
EXPLAINER_NAMES = tuple(list_explainers())


@dataclasses.dataclass
class ExplainedImage:
    """One image's explanations: name, predicted class, true class (or None), and method -> Explanation."""

    name: str
    predicted: str
    truth: str | None
    explanations: dict


def explain_image(classifier, source, name: str, methods: list[str], out_dir: Path, *, layer: str | None = None,
                  class_cell: str | None = None, truth: str | None = None, **params) -> ExplainedImage:
    """Explains one image with each method and writes ``<name>-<method>-grey|heatmap|comp.png``.

    ``params`` go to the methods that take them (``num_masks``, ``mask_cells`` and ``keep_probability`` to
    rise, ``seed`` to every method).
    """
    from timl import xai
    from timl.images import decode_image

    image = decode_image(source, name=name)
    probabilities = classifier.predict_images([image])[0]
    predicted = classifier.class_names[int(np.argmax(probabilities))]
    class_index = classifier.class_index(class_cell)
    explanations = {}
    for method in methods:
        accepted = {key: value for key, value in params.items()
                    if key == "seed" or key in xai.get_explainer(method).defaults}
        explanation = xai.explain(classifier.model, image, method, layer=layer, class_index=class_index,
                                  preprocessing=classifier.preprocessing, **accepted)
        logger.info("%s", explained_what(name, explanation, classifier.class_names, predicted))
        for kind, picture in (("grey", explanation.grey), ("heatmap", explanation.heatmap),
                              ("comp", explanation.composite)):
            picture.save(out_dir / f"{name}-{method}-{kind}.png")
        explanations[method] = explanation
    return ExplainedImage(name, predicted, truth, explanations)


def explained_what(name: str, explanation, class_names, predicted: str) -> str:
    """One line saying what an explanation explains: the image, the method, the class and the layer, e.g.
    ``0007: gradcam explained class 7 (the predicted class) at layer conv2d_1``."""
    explained = class_names[explanation.class_index]
    chosen = "the predicted class" if explained == predicted else f"predicted: {predicted}"
    where = (f"at layer {explanation.layer}" if explanation.layer
             else "over the input pixels (this method uses no layer)")
    return f"{name}: {explanation.method} explained class {explained} ({chosen}) {where}"


def draw_pages(results: list[ExplainedImage], methods: list[str], out_dir: Path, sources: dict) -> list[Path]:
    """Grid pages: per image, the original and one composite per method, titled with predicted/true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from timl.images import decode_image

    pages = []
    for page, start in enumerate(range(0, len(results), ROWS_PER_PAGE), start=1):
        chunk = results[start:start + ROWS_PER_PAGE]
        columns = 1 + len(methods)
        figure, axes = plt.subplots(len(chunk), columns, figsize=(2.6 * columns, 2.6 * len(chunk)), squeeze=False)
        for row, result in enumerate(chunk):
            axes[row][0].imshow(decode_image(sources[result.name]))
            truth = f" / true {result.truth}" if result.truth else ""
            axes[row][0].set_title(f"{result.name}\npred {result.predicted}{truth}", fontsize=8)
            for column, method in enumerate(methods, start=1):
                explanation = result.explanations[method]
                axes[row][column].imshow(explanation.composite)
                axes[row][column].set_title(f"{method} ({explanation.score:.2f})", fontsize=8)
            for axis in axes[row]:
                axis.axis("off")
        figure.tight_layout()
        path = out_dir / f"explain-page-{page:03d}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        pages.append(path)
    return pages


def _dataframe_images(test_dataframe: Path, img_dir: Path | None) -> tuple[dict, dict]:
    """Image paths and true classes (when the dataframe has class columns) of a test dataframe."""
    import pandas as pd

    from timl import datasets

    frame = datasets.read_image_table(test_dataframe, not_found="Test dataframe not found", field="test_dataframe",
                                      what="test dataframe")
    names = list(frame[datasets.IMAGE_COLUMN])
    img_dir = img_dir or test_dataframe.parent / "images"
    paths = dict(zip(names, datasets.image_paths(names, img_dir, test_dataframe)))
    class_columns = [column for column in frame.columns if column != datasets.IMAGE_COLUMN]
    ones = frame[class_columns].apply(pd.to_numeric, errors="coerce").eq(1).to_numpy()
    truths = {name: ";".join(column for column, one in zip(class_columns, row) if one) or None
              for name, row in zip(names, ones)}
    return paths, truths


def write_explanations(*, model_uri=None, keras_model=None, config_table=None, image=None, test_dataframe=None,
                       img_dir=None, methods=(DEFAULT_EXPLAINER,), layer=None, class_cell=None, out_dir="explanations",
                       log_to_run=None, progress=None, **params) -> list[Path]:
    """The explain command: explains one image or a test dataframe and writes the images (and grid pages).

    Args:
        model_uri, keras_model, config_table: the model, as :func:`timl.classifier.load_classifier` takes it.
        image: one image file; or
        test_dataframe: a CSV of ``image_name`` (and optional class columns), with ``img_dir`` (default
            ``images/`` beside it).
        methods: explanation methods (:func:`timl.xai.list_explainers`). Defaults to the registry's default
            (Grad-CAM).
        layer: the layer of the Grad-CAM family (default: the last convolutional layer).
        class_cell: the class to explain, a name or an index (default: the predicted class).
        out_dir: the folder of the images. Defaults to "explanations".
        log_to_run: also store the images as artifacts ``explanations/`` of this MLflow run.
        progress: optional ``progress(done, total)`` called after each image.
        **params: the methods' parameters (``num_masks``, ``mask_cells``, ``keep_probability``, ``seed``),
            each given to the methods that take it.

    Returns:
        The files written.

    Raises:
        ModelError: neither or both of image and test_dataframe, an unknown method, layer or class, or the
            run cannot take the artifacts.
    """
    from timl.classifier import load_classifier

    if bool(image) == bool(test_dataframe):
        raise ModelError("Give exactly one of --image or --test-dataframe. "
                         f"Received: image={image!r}, test_dataframe={test_dataframe!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classifier = load_classifier(model_uri=model_uri, keras_model=keras_model, config_table=config_table)
    if image:
        sources, truths = {Path(image).stem: str(image)}, {}
    else:
        sources, truths = _dataframe_images(Path(test_dataframe), Path(img_dir) if img_dir else None)
    results = []
    for name, source in sources.items():
        results.append(explain_image(classifier, source, name, list(methods), out_dir, layer=layer,
                                     class_cell=class_cell, truth=truths.get(name), **params))
        if progress is not None:
            progress(len(results), len(sources))
    files = sorted(out_dir.glob("*.png"))
    if test_dataframe:
        files += draw_pages(results, list(methods), out_dir, sources)
    if log_to_run:
        _log_to_run(log_to_run, out_dir)
    return files


def _log_to_run(run_id: str, out_dir: Path) -> None:
    from timl import tracking

    try:
        tracking.log_folder(out_dir, "explanations", run_id=run_id)
    except tracking.tracking_errors() as error:
        raise ModelError(f"Cannot log the explanations to run {run_id!r}: {error}") from error


EXAMPLE = """Examples:

  python -m timl.explain --model-uri models:/skin@champion --image lesion.jpg --method gradcam --method rise

  python -m timl.explain --keras-model model.h5 --image lesion.jpg --method rise --masks 4000 --cells 12 --seed 0

  python -m timl.explain --keras-model 0-keras_model-250101-120000.h5 --test-dataframe test.csv --img-dir images
      --method gradcam --layer block5_conv3 --out-dir explanations --log-to-run 3f2a...
"""


@command(epilog=EXAMPLE)
@click.option("--model-uri", help="MLflow model URI: runs:/ID/model, models:/NAME@ALIAS, models:/NAME/VERSION.")
@click.option("--keras-model", type=click.Path(dir_okay=False), help="A .h5/.keras model file.")
@click.option("--config-table", type=click.Path(dir_okay=False), help="The TIML table the .h5 model was trained from.")
@click.option("--image", type=click.Path(dir_okay=False), help="One image to explain.")
@click.option("--test-dataframe", type=click.Path(dir_okay=False), help="CSV with image_name (and optional class columns).")
@click.option("--img-dir", type=click.Path(file_okay=False), help="Image folder (default: images/ beside the dataframe).")
@click.option("--method", "methods", multiple=True, default=(DEFAULT_EXPLAINER,), show_default=True,
              help=f"{', '.join(EXPLAINER_NAMES)}; repeat for several.")
@click.option("--layer", help="Layer to explain (default: the last convolutional layer).")
@click.option("--class", "class_cell", help="Class name or index to explain (default: the predicted class).")
@click.option("--masks", "--rise-masks", "num_masks", type=click.IntRange(1, 20000),
              help="RISE: number of random masks (default 2000; the server's ?masks=).")
@click.option("--cells", "--rise-cells", "mask_cells", type=click.IntRange(2, 64),
              help="RISE: mask size, the cells of each random mask's grid per side (default 8; the server's ?cells=).")
@click.option("--keep", "--rise-keep", "keep_probability", type=click.FloatRange(0.01, 0.99),
              help="RISE: probability that a mask cell keeps the image (default 0.5; the server's ?keep=).")
@click.option("--seed", type=int, help="Seed of the random methods (RISE, SmoothGrad).")
@click.option("--out-dir", default="explanations", show_default=True, type=click.Path(file_okay=False))
@click.option("--log-to-run", help="Also store the images as artifacts of this MLflow run.")
@tracking_uri_option()
def cli(model_uri, keras_model, config_table, image, test_dataframe, img_dir, methods, layer, class_cell, num_masks,
        mask_cells, keep_probability, seed, out_dir, log_to_run, tracking_uri):
    """Explain classifications with Grad-CAM, RISE and more."""
    from timl import tracking
    setup_logging()
    given = {"num_masks": num_masks, "mask_cells": mask_cells, "keep_probability": keep_probability, "seed": seed}
    params = {name: value for name, value in given.items() if value is not None}
    with user_errors():
        if model_uri or log_to_run:
            tracking.configure(tracking_uri, create=False)
        files = write_explanations(model_uri=model_uri, keras_model=keras_model, config_table=config_table, image=image,
                                   test_dataframe=test_dataframe, img_dir=img_dir, methods=methods, layer=layer,
                                   class_cell=class_cell, out_dir=out_dir, log_to_run=log_to_run,
                                   progress=progress_printer("explained") if test_dataframe else None, **params)
    click.echo(f"Wrote {len(files)} images to {out_dir}" + (f" and to run {log_to_run}" if log_to_run else ""))


if __name__ == "__main__":
    cli()
