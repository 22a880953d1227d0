"""Head-only rows: a frozen backbone, activations cached once and reused across rows and tables, a folder of
activations written by predict, per-image metadata; the logged model is the whole model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import small_cnn_row, write_table


def _row(dataset: str, **cells) -> dict:
    return small_cnn_row(dataset, **{"epochs": 3, "imgaug": "hflip", "freeze": "backbone", **cells})


def _train(table, out, **options):
    from timl.training import train_table

    outcome = train_table(table, out_dir=out, experiment=out.name, skip_roc=True, **options)
    assert not outcome.failed, [row.message for row in outcome.failed]
    return outcome


def _test_accuracy_of_the_logged_model(run_id: str, dataset: str) -> float:
    """The logged model's accuracy on the row's test images, computed here from the images."""
    from timl import datasets
    from timl.classifier import load_classifier

    classifier = load_classifier(model_uri=f"runs:/{run_id}/model")
    split = datasets.load_dataset(dataset, "n=15", seed=0)
    probabilities = classifier.predict_images(split.paths("test"))
    return float((probabilities.argmax(axis=1) == split.labels("test").argmax(axis=1)).mean())


def test_activations_are_cached_once_and_the_logged_model_is_whole(tracking_uri, mini_digits, tmp_path,
                                                                     monkeypatch, caplog):
    """Rows of one backbone and data that differ only in head settings (lr, epochs) compute the activations once:
    the second row of the table and a later table's row reuse the first row's files."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("TIML_ACTIVATION_CACHE", str(tmp_path / "cache"))
    dataset = str(mini_digits / "mini.csv")
    table = write_table(tmp_path / "t.csv", [_row(dataset, activations="auto"),
                                             _row(dataset, activations="auto", lr=3e-3, epochs=2)])
    with caplog.at_level("INFO", logger="timl.training.activations"):
        outcome = _train(table, tmp_path / "first")
    computed = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Cached the")]
    assert len(computed) == 3, f"train, dev and test once, by the first row only: {computed}"
    [folder] = [path for path in (tmp_path / "cache").iterdir() if path.is_dir()]
    files = sorted(folder.glob("*.npy"))
    assert len(files) == 60 * 2 + 15 + 15, "train: both views of hflip; dev and test: the image itself"
    assert (folder / "settings.json").is_file()
    written = {path.name: path.stat().st_mtime_ns for path in files}
    again = write_table(tmp_path / "again.csv", [_row(dataset, activations="auto", seed=0, lr=1e-2, epochs=1)])
    _train(again, tmp_path / "second")
    assert {path.name: path.stat().st_mtime_ns for path in folder.glob("*.npy")} == written, "reused, not rewritten"
    client = MlflowClient()
    for row in outcome.rows:
        run = client.get_run(row.run_id)
        assert run.data.params["activations_folder"] == str(folder)
        assert _test_accuracy_of_the_logged_model(row.run_id, dataset) == pytest.approx(
            run.data.metrics["test/accuracy"], abs=1e-9)


def test_a_frozen_backbone_keeps_its_weights(tracking_uri, mini_digits, tmp_path):
    from timl import models
    from timl.classifier import load_classifier

    outcome = _train(write_table(tmp_path / "t.csv", [_row(str(mini_digits / "mini.csv"), imgaug="none")]),
                     tmp_path / "out")
    trained = load_classifier(model_uri=f"runs:/{outcome.rows[0].run_id}/model").model
    fresh = models.create_model("SmallCNN", 3, 16, weights="none", seed=0)
    head = set(models.head_layer_names(fresh))
    for layer in fresh.layers:
        if layer.weights and layer.name not in head:
            for got, initial in zip(trained.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, initial)
    assert not np.array_equal(trained.get_layer("predictions").get_weights()[0],
                              fresh.get_layer("predictions").get_weights()[0]), "the head trained"


def test_a_head_trains_on_a_folder_written_by_predict(tracking_uri, mini_digits, tmp_path):
    from timl.predict import predict

    dataset = str(mini_digits / "mini.csv")
    first = _train(write_table(tmp_path / "a.csv", [small_cnn_row(dataset, epochs=1)]), tmp_path / "a")
    model = next((tmp_path / "a").glob("0-keras_model-*.h5"))
    predict(dataset, tmp_path / "acts.csv", keras_model=model, layer="block3_pool", generate_numpy=True)
    assert len(list((tmp_path / "acts").glob("*-0000000000.npy"))) == 90
    rows = [_row(dataset, imgaug="none", activations=str(tmp_path / "acts"), weights=str(model))]
    outcome = _train(write_table(tmp_path / "b.csv", rows), tmp_path / "b")
    assert outcome.rows[0].status == "FINISHED" and first.rows[0].status == "FINISHED"
    next((tmp_path / "acts").glob("*.npy")).unlink()
    from timl.training import train_table

    broken = train_table(write_table(tmp_path / "c.csv", rows), out_dir=tmp_path / "c", experiment="c", skip_roc=True)
    assert broken.rows[0].status == "FAILED" and "no activations for 1 image(s)" in broken.rows[0].message


def test_metadata_joins_the_heads_input(tracking_uri, mini_digits, tmp_path, monkeypatch):
    from timl.classifier import load_classifier

    monkeypatch.setenv("TIML_ACTIVATION_CACHE", str(tmp_path / "cache"))
    dataset = str(mini_digits / "mini.csv")
    names = pd.read_csv(dataset, dtype=str)["image_name"]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"image_name": names, "age": rng.random(len(names)), "site_a": rng.integers(0, 2, len(names))})
    frame.to_csv(tmp_path / "meta.csv", index=False)
    rows = [_row(dataset, imgaug="none", activations="auto", metadata=str(tmp_path / "meta.csv"))]
    outcome = _train(write_table(tmp_path / "t.csv", rows), tmp_path / "out")
    model = load_classifier(model_uri=f"runs:/{outcome.rows[0].run_id}/model").model
    assert [tensor.name for tensor in model.inputs] == ["image", "metadata"] and model.inputs[1].shape[-1] == 2
    from timl.errors import ModelError
    from timl.predict import predict

    result = predict(dataset, tmp_path / "p.csv", model_uri=f"runs:/{outcome.rows[0].run_id}/model",
                     metadata=tmp_path / "meta.csv")
    assert len(pd.read_csv(result.output_csv)) == len(names)
    with pytest.raises(ModelError, match="give the CSV with --metadata"):
        predict(dataset, tmp_path / "q.csv", model_uri=f"runs:/{outcome.rows[0].run_id}/model")
    frame.iloc[1:].to_csv(tmp_path / "meta.csv", index=False)
    from timl.training import train_table

    broken = train_table(write_table(tmp_path / "t2.csv", rows), out_dir=tmp_path / "o2", experiment="o2",
                         skip_roc=True)
    assert broken.rows[0].status == "FAILED" and "no metadata for 1 image(s)" in broken.rows[0].message
    assert names[0] in broken.rows[0].message


def test_a_cached_row_trains_exactly_as_the_same_row_without_the_cache(tracking_uri, mini_digits, tmp_path,
                                                                        monkeypatch):
    """One batch per epoch (batchsize above the 60 train images) takes shuffling out: the frozen backbone over the
    images and the head over cached activations then give the same losses, epoch by epoch."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("TIML_ACTIVATION_CACHE", str(tmp_path / "cache"))
    dataset = str(mini_digits / "mini.csv")
    rows = [_row(dataset, imgaug="none", batchsize=64, epochs=4), _row(dataset, imgaug="none", batchsize=64,
                                                                      epochs=4, activations="auto")]
    outcome = _train(write_table(tmp_path / "t.csv", rows), tmp_path / "out")
    client = MlflowClient()
    frozen, cached = ([metric.value for metric in client.get_metric_history(row.run_id, "val_loss")]
                      for row in outcome.rows)
    assert len(frozen) == 4 and cached == pytest.approx(frozen, rel=1e-4)
