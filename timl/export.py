"""``python -m timl.export`` (``timl export``): a logged or registered model, or a Keras file, as a TensorFlow
SavedModel (TF Serving), an ONNX file (ONNX Runtime) or a Triton model repository folder.

Each export is checked before it is kept: its probabilities on sample images equal the Keras model's within
1e-4 (:mod:`timl.exporting`), else the command fails and writes nothing. An export of ``--model-uri`` is also
logged as artifacts of the model's run (``exports/<format>/``).
"""

from __future__ import annotations

from pathlib import Path

import click

from timl.cli import command, cuda_gpu_option, select_gpu, setup_logging, tracking_uri_option, user_errors

#: The formats (:data:`timl.exporting.FORMATS`; here so ``--help`` imports no TensorFlow).
FORMATS = ("savedmodel", "onnx", "triton")

#: Where an export of a logged model goes among its run's artifacts: ``exports/<format>/``.
ARTIFACT_FOLDER = "exports"

EXAMPLE = """Examples:

  python -m timl.export --model-uri models:/skin@champion --format triton --out triton_models

  python -m timl.export --keras-model train_output/0-keras_model-250101-120000.h5 --format onnx --out skin_onnx
"""


def default_model_name(model_uri: str | None, keras_model: str | None) -> str:
    """The Triton model's name when none is given: the registered model's name, else the Keras file's stem, with
    characters Triton refuses turned into ``_``."""
    if model_uri and model_uri.startswith("models:/"):
        text = model_uri[len("models:/"):].split("@")[0].split("/")[0]
    elif keras_model:
        text = Path(keras_model).stem
    else:
        text = "timl_model"
    return "".join(char if char.isascii() and (char.isalnum() or char in "_.-") else "_" for char in text) or "model"


def export(out, fmt: str, *, model_uri: str | None = None, keras_model: str | None = None,
           model_name: str | None = None, triton_platform: str = "onnx", max_batch_size: int = 32):
    """Loads a model, exports it (checked), and logs an export of a model URI on the model's run.

    Returns:
        The :class:`timl.exporting.Exported`, and the artifact URI it was logged at (None: not logged).

    Raises:
        ConfigError, ModelError, MissingFileError: a bad option, model or output folder (nothing written).
    """
    from timl import exporting
    from timl.classifier import load_classifier

    exporting.check_out_folder(Path(out))  # before the minutes of loading a model
    classifier = load_classifier(model_uri=model_uri, keras_model=keras_model)
    exported = exporting.export_model(classifier, fmt, out, model_name=model_name or default_model_name(
        model_uri, keras_model), triton_platform=triton_platform, max_batch_size=max_batch_size)
    run_id = classifier.source.get("run_id") if model_uri else None
    if not run_id:
        return exported, None
    from timl import tracking

    tracking.log_folder(exported.folder, f"{ARTIFACT_FOLDER}/{fmt}", run_id=run_id)
    return exported, f"runs:/{run_id}/{ARTIFACT_FOLDER}/{fmt}"


@command(epilog=EXAMPLE)
@click.option("--model-uri", help="MLflow model URI: runs:/ID/model, models:/NAME@ALIAS or models:/NAME/VERSION.")
@click.option("--keras-model", type=click.Path(dir_okay=False), help="A .h5/.keras model file (instead of --model-uri).")
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS),
              help="savedmodel: a TensorFlow SavedModel for TF Serving (signature serving_default, image -> "
                   "probabilities); onnx: model.onnx for ONNX Runtime; triton: a Triton model repository folder.")
@click.option("--out", required=True, type=click.Path(), help="A new or empty folder to write the export into.")
@click.option("--model-name", help="The Triton model's name (default: the registered model's name or the file's).")
@click.option("--triton-platform", type=click.Choice(["onnx", "savedmodel"]), default="onnx", show_default=True,
              help="The model file of a Triton folder: 1/model.onnx or 1/model.savedmodel.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="The Triton model's largest batch (dynamic batching fills it).")
@cuda_gpu_option
@tracking_uri_option()
def cli(model_uri, keras_model, fmt, out, model_name, triton_platform, max_batch_size, cuda_gpu, tracking_uri):
    """Export a model for TF Serving, ONNX Runtime or Triton, checked against the Keras model."""
    setup_logging()
    select_gpu(cuda_gpu)
    with user_errors():
        if model_uri:
            from timl import tracking

            tracking.configure(tracking_uri, create=False)
        exported, logged = export(out, fmt, model_uri=model_uri, keras_model=keras_model, model_name=model_name,
                                  triton_platform=triton_platform, max_batch_size=max_batch_size)
    click.echo(f"Wrote {fmt} export {exported.model_file}: probabilities within {exported.difference:.1g} of the "
               f"Keras model's on {exported.images} sample images" + (f"; logged as {logged}" if logged else ""))


if __name__ == "__main__":
    cli()
