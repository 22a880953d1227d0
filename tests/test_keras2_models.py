"""Models saved by the original TIML (Keras 2 .h5 files): they load in predict, explain and the server, and predict
what Keras 2 itself predicts on the same images, preprocessed as the original did.

The Keras 2 files are real: a subprocess imports the ``tf-keras`` package (Keras 2) and builds models shaped as
the original's (a VGG16 backbone, flatten, dense layers with dropout, a softmax or sigmoid ``predictions`` layer,
compiled with the original's losses and metrics; no ImageNet weights), saves them as .h5 and predicts on images
preprocessed the original's two ways: its data generator (the table's resize filter, then its colour space) and
its single-image path (nearest neighbour). Both divide the pixel values by 255. This process keeps Keras 3.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import tiny_classifier, write_table
from timl.classifier import ORIGINAL_RESIZE_FILTER, classifier_from_keras_file, is_keras2_file
from timl.images import Preprocessing

pytestmark = [pytest.mark.slow,
              # Keras 3 names a Keras 2 model's input differently ('input_1'), and says so when it is called
              pytest.mark.filterwarnings("ignore:The structure of `inputs` doesn't match"),
              pytest.mark.component("tf-keras")]

SIZE = 32
CLASSES = ("MEL", "NV", "BCC")
#: Preprocessing cases: (resize filter, colour space) of the original's data generator.
CASES = (("nearest", "RGB"), ("bicubic", "HSV"))

#: Runs with the tf-keras package (Keras 2): builds the original-shaped models, saves them, predicts.
KERAS2_SCRIPT = r'''
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
from PIL import Image
import tf_keras as keras

spec = json.loads(open(sys.argv[1]).read())
keras.utils.set_random_seed(0)
FILTERS = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}


def mean_f1_score(y_true, y_pred):
    tp = keras.backend.sum(y_true * y_pred, axis=0)
    return keras.backend.mean(2 * tp / (keras.backend.sum(y_true + y_pred, axis=0) + keras.backend.epsilon()))


def loss_1mf1_by_bce(y_true, y_pred):
    return (1 - mean_f1_score(y_true, y_pred)) * keras.losses.binary_crossentropy(y_true, y_pred)


def original_vgg16(classes, activation):
    base = keras.applications.VGG16(weights=None, input_shape=(spec["size"], spec["size"], 3), include_top=False)
    x = keras.layers.Flatten(name="flatten")(base.layers[-1].output)
    for number, units in enumerate((64, 64)):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{number}")(x)
        x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(classes, activation=activation, name="predictions")(x)
    return keras.models.Model(base.layers[0].output, x, name="vgg16")


def generator_batch(paths, resize_filter, color_space):
    """The original's data generator: resize with the table's filter, grey to RGB, colour space, / 255."""
    batch = np.zeros((len(paths), spec["size"], spec["size"], 3))
    for index, path in enumerate(paths):
        image = Image.open(path).resize((spec["size"], spec["size"]), resample=FILTERS[resize_filter])
        if image.mode == "L":
            image = image.convert("RGB")
        if color_space != "RGB":
            image = image.convert(color_space)
        batch[index] = np.array(image, dtype=np.float32)
    return batch / 255.0


def single_image(path):
    """The original's single-image path (server, explanations): nearest-neighbour resize, / 255."""
    image = Image.open(path).resize((spec["size"], spec["size"]), Image.NEAREST)
    sample = np.zeros((1, spec["size"], spec["size"], 3))
    sample[0] = np.array(image, dtype=np.float32)
    return sample / 255.0


single = original_vgg16(3, "softmax")
single.compile(loss="categorical_crossentropy", metrics=["accuracy"],
               optimizer=keras.optimizers.SGD(learning_rate=1e-5, momentum=0.9, nesterov=True))
multi = original_vgg16(3, "sigmoid")
multi.compile(loss=loss_1mf1_by_bce, optimizer=keras.optimizers.Nadam(learning_rate=1e-5),
              metrics=["accuracy", "binary_accuracy", mean_f1_score])

def sharpen(model, batch):
    """Scales the last layer so that its logits spread (std 3) over the images: an untrained VGG16 answers about
    1/n for every image, which would hide any difference in preprocessing."""
    features = keras.models.Model(model.inputs, model.get_layer("predictions").input).predict(batch, verbose=0)
    kernel, bias = model.get_layer("predictions").get_weights()
    logits = features @ kernel
    scale = 3.0 / (logits - logits.mean(axis=0)).std()
    model.get_layer("predictions").set_weights([kernel * scale, -(logits * scale).mean(axis=0)])


results = {}
for name, model in (("single", single), ("multi", multi)):
    sharpen(model, generator_batch(spec["images"], "nearest", "RGB"))
    model.save(spec["models"][name])
    for resize_filter, color_space in spec["cases"]:
        batch = generator_batch(spec["images"], resize_filter, color_space)
        results[f"{name}/{resize_filter}/{color_space}"] = model.predict(batch, verbose=0)
    rgb = np.concatenate([single_image(path) for path in spec["rgb_images"]])
    results[f"{name}/single_image"] = model.predict(rgb, verbose=0)
np.savez(spec["out"], **results)
print("keras", keras.__version__)
'''


def _write_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """RGB PNGs and JPEGs of several sizes (one already the model's size) and a grey PNG; returns (all, RGB)."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = []
    for index, (width, height) in enumerate([(45, 37), (64, 48), (SIZE, SIZE), (101, 77)]):
        coarse = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        pixels = np.kron(coarse, np.ones((4, 4, 1), np.uint8))[:height, :width]
        pixels = np.clip(pixels.astype(int) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
        path = folder / (f"img{index}.jpg" if index % 2 else f"img{index}.png")
        Image.fromarray(pixels).save(path, **({"quality": 90} if index % 2 else {}))
        rgb.append(path)
    grey = folder / "grey.png"
    Image.fromarray(rng.integers(0, 256, (40, 52), dtype=np.uint8), mode="L").save(grey)
    return rgb + [grey], rgb


@pytest.fixture(scope="module")
def keras2(tmp_path_factory):
    """The Keras 2 files, their images, the ground truth and what Keras 2 predicted."""
    folder = tmp_path_factory.mktemp("keras2")
    paths, rgb = _write_images(folder / "images")
    models = {"single": str(folder / "0-keras_model.h5"), "multi": str(folder / "1-keras_model.h5")}
    spec = {"size": SIZE, "models": models, "images": [str(p) for p in paths], "rgb_images": [str(p) for p in rgb],
            "cases": CASES, "out": str(folder / "keras2.npz")}
    (folder / "spec.json").write_text(json.dumps(spec))
    (folder / "keras2.py").write_text(KERAS2_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(folder / "keras2.py"), str(folder / "spec.json")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "keras 2." in done.stdout
    truth = pd.DataFrame({"image_name": [p.stem for p in paths], "MEL": 1, "NV": 0, "BCC": 0})
    truth.to_csv(folder / "isic.csv", index=False)
    with np.load(folder / "keras2.npz") as loaded:
        expected = dict(loaded)
    return {"folder": folder, "paths": paths, "rgb": rgb, "models": {k: Path(v) for k, v in models.items()},
            "expected": expected}


def original_row(**cells) -> dict:
    """A row of an original TIML input table (Examples/Example01/sample_train_input_1.csv's columns)."""
    row = {"method": "VGG16", "dataset": "isic", "split": "frac=0.2", "epochs": 5, "imgaug": "none",
           "batchsize": 2, "imgsize": SIZE, "resizefilter": "nearest", "colorspace": "RGB",
           "classcolumns": ";".join(CLASSES), "classweights": "default"}
    row.update(cells)
    return row


def test_the_files_are_keras2_files_and_the_test_process_keeps_keras3(keras2):
    import keras

    assert keras.__version__.startswith("3.")
    assert is_keras2_file(keras2["models"]["single"]) and is_keras2_file(keras2["models"]["multi"])
    expected = keras2["expected"]
    assert np.abs(expected["single/nearest/RGB"] - expected["single/bicubic/HSV"]).max() > 1e-3, \
        "the models must tell the preprocessings apart for the comparisons below to mean anything"


def test_a_keras2_file_alone_predicts_as_the_originals_single_image_path(keras2):
    classifier = classifier_from_keras_file(keras2["models"]["single"])
    assert classifier.preprocessing == Preprocessing(SIZE, ORIGINAL_RESIZE_FILTER, "RGB")
    assert classifier.class_names == ("C0", "C1", "C2") and classifier.multi_label is False
    predicted = classifier.predict_images([str(path) for path in keras2["rgb"]])
    np.testing.assert_allclose(predicted, keras2["expected"]["single/single_image"], atol=1e-5)


@pytest.mark.parametrize("resize_filter, color_space", CASES)
def test_with_its_table_it_predicts_as_the_originals_data_generator(keras2, tmp_path, resize_filter, color_space):
    table = write_table(tmp_path / "automation_input.csv",
                        [original_row(resizefilter=resize_filter, colorspace=color_space)])
    classifier = classifier_from_keras_file(keras2["models"]["single"], config_table=table)
    assert classifier.preprocessing == Preprocessing(SIZE, resize_filter, color_space)
    assert classifier.class_names == CLASSES
    predicted = classifier.predict_images([str(path) for path in keras2["paths"]])
    np.testing.assert_allclose(predicted, keras2["expected"][f"single/{resize_filter}/{color_space}"], atol=1e-5)


def test_a_multi_label_model_with_the_originals_loss_and_metrics(keras2, tmp_path):
    table = write_table(tmp_path / "t.csv", [original_row(method="VGG16-fc2k-ml", resizefilter="bicubic",
                                                          colorspace="HSV")])
    classifier = classifier_from_keras_file(keras2["models"]["multi"], config_table=table)
    assert classifier.multi_label is True
    predicted = classifier.predict_images([str(path) for path in keras2["paths"]])
    np.testing.assert_allclose(predicted, keras2["expected"]["multi/bicubic/HSV"], atol=1e-5)


def test_an_empty_filter_cell_is_nearest_for_keras2_files_only(keras2, tmp_path):
    table = write_table(tmp_path / "t.csv", [original_row(resizefilter="")])
    assert classifier_from_keras_file(keras2["models"]["single"], config_table=table).preprocessing.resizefilter \
        == "nearest"
    tiny = tiny_classifier(size=SIZE)
    tiny.model.save(tmp_path / "keras3.h5")
    assert not is_keras2_file(tmp_path / "keras3.h5")
    loaded = classifier_from_keras_file(tmp_path / "keras3.h5", config_table=table)
    assert loaded.preprocessing.resizefilter == "bilinear", "TIML's own default is unchanged"


def test_a_results_table_gives_the_models_own_row(keras2, tmp_path):
    """The original's automation_result.csv as config table: the row whose trainmodel is the model's file."""
    rows = [original_row(resizefilter="nearest", trainmodel="1-keras_model.h5"),
            original_row(resizefilter="bicubic", colorspace="HSV", trainmodel="0-keras_model.h5")]
    table = write_table(tmp_path / "automation_result.csv", rows)
    classifier = classifier_from_keras_file(keras2["models"]["single"], config_table=table)
    assert classifier.preprocessing == Preprocessing(SIZE, "bicubic", "HSV")


def test_the_class_names_come_from_the_root_named_dataset(keras2, tmp_path, monkeypatch):
    monkeypatch.chdir(keras2["folder"])
    table = write_table(tmp_path / "t.csv", [original_row(classcolumns="default", dataset="isic", split="n=1")])
    assert classifier_from_keras_file(keras2["models"]["single"], config_table=table).class_names == CLASSES


def test_predict_explain_and_the_server_take_a_keras2_file(keras2, tmp_path, monkeypatch):
    from timl.explain import write_explanations
    from timl.predict import predict
    from timl.serving import create_app

    monkeypatch.chdir(tmp_path)
    model = keras2["models"]["single"]
    table = write_table(tmp_path / "automation_input.csv", [original_row(resizefilter="bicubic", colorspace="HSV")])
    result = predict(keras2["folder"] / "isic.csv", tmp_path / "predictions.csv", keras_model=model,
                     config_table=table, img_dir=keras2["folder"] / "images")
    written = pd.read_csv(result.output_csv)
    np.testing.assert_allclose(written[list(CLASSES)].to_numpy(), keras2["expected"]["single/bicubic/HSV"],
                               atol=1e-5)

    files = write_explanations(keras_model=model, config_table=table, image=keras2["rgb"][0],
                               methods=("gradcam",), out_dir=tmp_path / "explanations")
    assert files and all(path.stat().st_size > 0 for path in files)

    app = create_app({"CLASSIFICATION_MODEL": str(model), "EVALUATION_DB": str(tmp_path / "reviews.db")})
    _assert_served_predictions(app, keras2, "single/single_image")


def _assert_served_predictions(app, keras2, expected: str) -> None:
    """Every RGB image classified through the app's /api/classify gives tf-keras's own prediction ``expected``."""
    client = app.test_client()
    for index, path in enumerate(keras2["rgb"]):
        answer = client.post("/api/classify", data={"file": (io.BytesIO(path.read_bytes()), path.name)},
                             content_type="multipart/form-data")
        assert answer.status_code == 200, answer.get_json()
        np.testing.assert_allclose(answer.get_json()["prediction"], keras2["expected"][expected][index], atol=1e-5)


def test_the_server_reads_the_results_table_beside_an_original_model(keras2, tmp_path):
    """The original's output folder as it is: the .h5 and its automation_result.csv, no sidecar."""
    import shutil

    from timl.serving import create_app

    model = tmp_path / "0-keras_model.h5"
    shutil.copy(keras2["models"]["single"], model)
    write_table(tmp_path / "automation_result.csv", [original_row(resizefilter="bicubic", colorspace="HSV",
                                                                  trainmodel=model.name)])
    app = create_app({"CLASSIFICATION_MODEL": str(model), "EVALUATION_DB": str(tmp_path / "reviews.db")})
    _assert_served_predictions(app, keras2, "single/bicubic/HSV")
