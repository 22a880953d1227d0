"""Expert answers back into training (timl.review export): the votes and rules, the CSV, its images and
provenance, the MLflow run, the user errors, ``a.csv+b.csv`` unions in the dataset cell, and a row that trains on
the experts' corrections and names them as its data source."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from helpers import REPO, colour_classifier, random_images, small_cnn_row, train_in_own_store
from timl import review
from timl.datasets import load_dataset
from timl.errors import DatasetError, MissingFileError

CLASSES = ("A", "B", "C")
ORIGINAL_IMAGES = 40

#: (reviewer, image, answer) in the order posted; img005's second answer replaces Dr. A's first.
ANSWERS = [
    ("Dr. A", "img000.png", {"agree": True, "predicted": "A"}),
    ("Dr. B", "img000.png", {"agree": True, "predicted": "A"}),  # agreement: A
    ("Dr. A", "img001.png", {"agree": False, "predicted": "A", "label": "C"}),
    ("Dr. B", "img001.png", {"agree": False, "predicted": "A", "label": "C"}),  # disagreement with the model: C
    ("Dr. A", "img002.png", {"agree": True, "predicted": "B"}),
    ("Dr. B", "img002.png", {"agree": False, "predicted": "B", "label": "C"}),
    ("Dr. C", "img002.png", {"agree": True, "predicted": "B"}),  # conflict, 2 of 3 for B
    ("Dr. A", "img003.png", {"skipped": True}),
    ("Dr. B", "img003.png", {"agree": True, "predicted": "C"}),  # one vote, one skip: C
    ("Dr. A", "img004.png", {"skipped": True}),  # only skipped: not reviewed
    ("Dr. A", "img005.png", {"agree": True, "predicted": "A"}),
    ("Dr. A", "img005.png", {"agree": False, "predicted": "A", "label": "B"}),  # changed: B
    ("Dr. A", "img006.png", {"agree": True, "predicted": "A"}),
    ("Dr. B", "img006.png", {"agree": False, "predicted": "A", "label": "B"}),  # a tie
]
HEADER = ["image_name", "A", "B", "C"]
ROWS = {"img000": [1, 0, 0], "img001": [0, 0, 1], "img002": [0, 1, 0], "img003": [0, 0, 1], "img005": [0, 1, 0]}


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """original/original.csv: 40 random images, classes A, B, C in turn, in original/images (which the experts
    review), and original/answers.db: the answers above, posted to the server's evaluation API."""
    from timl.serving import create_app

    from PIL import Image

    folder = tmp_path_factory.mktemp("reviews") / "original"
    names = random_images(folder / "images", ORIGINAL_IMAGES, size=(16, 16))
    # an agreement is a vote for the class the server's model predicts (never the client's "predicted"): the
    # reviewed images are coloured so that the colour classifier predicts what ANSWERS say it showed
    for _, image, answer in ANSWERS:
        if "predicted" in answer:
            colour = tuple(255 * (CLASSES.index(answer["predicted"]) == channel) for channel in range(3))
            Image.new("RGB", (16, 16), colour).save(folder / "images" / image)
    rows = [[name, *(int(index % 3 == column) for column in range(3))] for index, name in enumerate(names)]
    pd.DataFrame(rows, columns=HEADER).to_csv(folder / "original.csv", index=False)
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(folder / "images"),
                      "EVALUATION_DB": str(folder / "answers.db")}, classifier=colour_classifier(classes=CLASSES))
    client = app.test_client()
    for reviewer, image, answer in ANSWERS:
        payload = {"image": image, "evaluator": reviewer, "comment": "", "label": "", **answer}
        posted = client.post("/api/evaluate/answers", json=payload)
        assert posted.status_code == 201, posted.get_json()
    return folder


def _export(*arguments: str):
    return CliRunner().invoke(review.cli, ["export", *arguments])


def _rows(csv_path: Path) -> dict[str, list[int]]:
    frame = pd.read_csv(csv_path, dtype={"image_name": str})
    assert list(frame.columns) == HEADER
    return {row[0]: list(row[1:]) for row in frame.itertuples(index=False)}


def _copy_store(source: Path, target: Path) -> Path:
    with sqlite3.connect(source) as reading, sqlite3.connect(target) as writing:
        reading.backup(writing)
    return target


# ------------------------------------------------------------------------------------------------ the CSV


@pytest.mark.parametrize("options, kept, left_out, counts", [
    ([], ROWS, {"img006.png": "tie"},
     {"images_kept": 5, "images_left_out": 1, "left_out_by_reason": {"tie": 1}}),
    (["--conflicts", "drop"], {name: ROWS[name] for name in ("img000", "img001", "img003", "img005")},
     {"img002.png": "disagree", "img006.png": "disagree"},
     {"images_kept": 4, "images_left_out": 2, "left_out_by_reason": {"disagree": 2}}),
    (["--min-agreement", "2"], {name: ROWS[name] for name in ("img000", "img001", "img002")},
     {"img003.png": "too_few", "img005.png": "too_few", "img006.png": "tie"},
     {"images_kept": 3, "images_left_out": 3, "left_out_by_reason": {"too_few": 2, "tie": 1}}),
])
def test_the_rules_decide_which_images_and_labels_are_kept(original, tmp_path, options, kept, left_out, counts):
    out = tmp_path / "corrected.csv"
    result = _export("--db", str(original / "answers.db"), "--out", str(out), "--no-mlflow", *options)
    assert result.exit_code == 0, result.output
    assert _rows(out) == kept
    sidecar = json.loads((tmp_path / "corrected.csv.json").read_text())
    assert sidecar["left_out"] == left_out
    assert sidecar["counts"] == {"answers": 13, "skipped": 2, "images_reviewed": 6, **counts}
    assert f"Kept {counts['images_kept']} of 6 reviewed images" in result.output
    assert "Reviewers (3): Dr. A, Dr. B, Dr. C; 13 answers, 2 skipped (ignored)." in result.output
    assert f"Left out {counts['images_left_out']}: " in result.output and "img006.png" in result.output
    assert not (tmp_path / "images").exists(), "no --images: no links"


def test_the_sidecar_records_the_provenance(original, tmp_path):
    from timl.review_store import current_answers

    out = tmp_path / "corrected.csv"
    result = _export("--db", str(original / "answers.db"), "--out", str(out), "--images", str(original / "images"),
                     "--no-mlflow")
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "corrected.csv.json").read_text())
    models = {answer["model"] for answer in current_answers(str(original / "answers.db"))}
    assert sidecar["kind"] == "timl.review-export" and len(models) == 1 and sidecar["models"] == list(models)
    assert sidecar["database"] == str((original / "answers.db").resolve())
    assert sidecar["images"] == str((original / "images").resolve())
    assert sidecar["linked_images"] == str((tmp_path / "images").resolve())
    assert sidecar["reviewers"] == ["Dr. A", "Dr. B", "Dr. C"]
    assert sidecar["rules"] == {"conflicts": "majority", "min_agreement": 1, "classes": "A;B;C",
                                "classes_from": "answers"}
    assert sidecar["run_id"] is None and sidecar["created"][:2] == "20" and sidecar["csv"] == str(out.resolve())


def test_the_export_is_a_dataset_with_its_images_beside_it(original, tmp_path):
    out = tmp_path / "export" / "corrected.csv"
    for attempt in range(2):  # a second export over the same links is fine
        result = _export("--db", str(original / "answers.db"), "--out", str(out), "--images",
                         str(original / "images"), "--no-mlflow", *(["--overwrite"] if attempt else []))
        assert result.exit_code == 0, result.output
    links = sorted((tmp_path / "export" / "images").iterdir())
    assert [link.name for link in links] == [f"{name}.png" for name in ROWS]
    assert all(link.is_symlink() and link.resolve() == (original / "images" / link.name).resolve() for link in links)
    dataset = load_dataset(str(out), "n=1")
    assert dataset.class_names == CLASSES and dataset.img_dir == tmp_path / "export" / "images"
    assert sorted(pd.concat([dataset.train, dataset.dev, dataset.test])["image_name"]) == list(ROWS)


def test_classes_option_and_class_lists_recorded_by_two_models(original, tmp_path):
    database = _copy_store(original / "answers.db", tmp_path / "answers.db")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE answers SET classes = '[\"A\", \"B\"]', model = 'other v2' WHERE image = ?",
                           ("img000.png",))
    result = _export("--db", str(database), "--out", str(tmp_path / "c.csv"), "--no-mlflow")
    assert result.exit_code == 2
    assert "recorded different class lists" in result.output and "A;B (model other v2)" in result.output
    assert "--classes" in result.output
    result = _export("--db", str(database), "--out", str(tmp_path / "c.csv"), "--no-mlflow", "--classes", "B;A")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "c.csv", dtype={"image_name": str})
    assert list(frame.columns) == ["image_name", "B", "A"]
    assert frame["image_name"].tolist() == ["img000", "img002", "img005"]  # C is not a column: left out
    assert "2 whose class is not a class column (img001.png, img003.png)" in result.output


# ------------------------------------------------------------------------------------------------ MLflow


def test_the_export_is_an_mlflow_run_with_the_csv_as_artifact_and_dataset(original, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "corrected.csv"
    result = _export("--db", str(original / "answers.db"), "--out", str(out), "--images", str(original / "images"),
                     "--tracking-uri", uri, "--experiment", "reviews")
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "corrected.csv.json").read_text())
    run = MlflowClient(tracking_uri=uri).get_run(sidecar["run_id"])
    assert f"MLflow run: {run.info.run_id} (experiment reviews)" in result.output
    assert run.info.status == "FINISHED" and run.info.run_name == "review-export corrected"
    tags = run.data.tags
    assert tags["timl.command"] == "review-export" and tags["timl.review.reviewers"] == "Dr. A, Dr. B, Dr. C"
    assert tags["timl.review.model"] == sidecar["models"][0]
    assert tags["timl.review.images"] == str((original / "images").resolve())
    assert run.data.params["conflicts"] == "majority" and run.data.params["min_agreement"] == "1"
    assert run.data.params["database"] == str((original / "answers.db").resolve())
    assert run.data.metrics["images_kept"] == 5 and run.data.metrics["skipped"] == 2
    assert sidecar["artifact_uri"] == f"runs:/{run.info.run_id}/corrected.csv"
    artifacts = {item.path for item in MlflowClient(tracking_uri=uri).list_artifacts(run.info.run_id)}
    assert artifacts == {"corrected.csv", "corrected.csv.json"}
    logged = Path(MlflowClient(tracking_uri=uri).download_artifacts(run.info.run_id, "corrected.csv", str(tmp_path)))
    assert _rows(logged) == ROWS
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "corrected"
    assert json.loads(dataset_input.dataset.source) == {"uri": str(out.resolve())}
    assert {tag.key: tag.value for tag in dataset_input.tags}["mlflow.data.context"] == "review-export"


# ------------------------------------------------------------------------------------------------ user errors


def _not_sqlite(folder: Path) -> Path:
    (folder / "notes.db").write_text("not a database")
    return folder / "notes.db"


def _other_sqlite(folder: Path) -> Path:
    with sqlite3.connect(folder / "other.db") as connection:
        connection.execute("CREATE TABLE runs (id INTEGER)")
    return folder / "other.db"


def _empty_store(folder: Path) -> Path:
    from timl.review_store import current_answers

    current_answers(str(folder / "empty.db"))  # creates the store
    return folder / "empty.db"


def _only_skipped(folder: Path) -> Path:
    database = _empty_store(folder)
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO answers (created, image, evaluator, agree, label, predicted, comment, "
                           "reviewer, skipped) VALUES ('2026', 'img000.png', 'Dr. A', 0, '', '', '', 'Dr. A', 1)")
    return database


@pytest.mark.parametrize("make_db, options, expected", [
    (lambda folder: folder / "missing.db", [], ["Review database not found", "missing.db"]),
    (_not_sqlite, [], ["not an SQLite database of expert answers", "notes.db"]),
    (_other_sqlite, [], ["no 'answers' table", "other.db"]),
    (_empty_store, [], ["no answers yet", "empty.db"]),
    (_only_skipped, [], ["no answers left: all 1 answers were skipped", "db="]),
    (None, ["--min-agreement", "4"], ["no image is left after the rules", "min_agreement=4", "with fewer agreeing"]),
    (None, ["--classes", ";"], ["--classes needs the class columns", "Received: classes=';'"]),
    (None, ["--classes", "A;A"], ["A given twice"]),
    (None, ["--conflicts", "vote"], ["Invalid value for '--conflicts'"]),
    (None, ["--min-agreement", "0"], ["Invalid value for '--min-agreement'"]),
    (None, ["--images", "elsewhere"], ["Image folder not found", "images='elsewhere'"]),
    (None, ["--images", "."], ["5 reviewed image(s) not found", "img000.png"]),
])
def test_user_errors_are_named_with_exit_status_2(original, tmp_path, monkeypatch, make_db, options, expected):
    monkeypatch.chdir(tmp_path)
    database = make_db(tmp_path) if make_db else original / "answers.db"
    result = _export("--db", str(database), "--out", "corrected.csv", "--no-mlflow", *options)
    assert result.exit_code == 2, result.output
    for fragment in expected:
        assert fragment in result.output, (fragment, result.output)
    assert not (tmp_path / "corrected.csv").exists() and not (tmp_path / "mlflow.db").exists()


def test_existing_files_are_not_overwritten(original, tmp_path):
    out = tmp_path / "corrected.csv"
    out.write_text("image_name,X\n")
    arguments = ["--db", str(original / "answers.db"), "--out", str(out), "--no-mlflow"]
    result = _export(*arguments)
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.output
    assert out.read_text() == "image_name,X\n"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "img001.png").write_bytes(b"another image")
    result = _export(*arguments, "--overwrite", "--images", str(original / "images"))
    assert result.exit_code == 2 and "not replaced" in result.output and "img001.png" in result.output
    assert out.read_text() == "image_name,X\n" and sorted(path.name for path in (tmp_path / "images").iterdir()) == [
        "img001.png"], "nothing written when a link cannot be made"


def test_python_function_errors():
    with pytest.raises(ValueError, match="Unknown conflict rule; expected one of: majority, drop"):
        review.decide([], conflicts="vote")
    with pytest.raises(ValueError, match="min_agreement must be an integer >= 1"):
        review.decide([], min_agreement=0)


def test_python_m_timl_review_runs():
    result = subprocess.run([sys.executable, "-m", "timl.review", "export", "--help"], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "--min-agreement" in result.stdout and "Example" in result.stdout


# ------------------------------------------------------------------------------------------------ unions


def _write_gt(path: Path, rows: dict[str, list[int]], columns=HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([[name, *values] for name, values in rows.items()], columns=list(columns)).to_csv(path, index=False)
    return path


def test_a_union_takes_the_first_files_label_and_each_files_images(original, tmp_path):
    result = _export("--db", str(original / "answers.db"), "--out", str(tmp_path / "export" / "corrected.csv"),
                     "--images", str(original / "images"), "--no-mlflow")
    assert result.exit_code == 0, result.output
    cell = f"export/corrected.csv+{original / 'original.csv'}"
    dataset = load_dataset(cell, "n=5", base_dir=tmp_path)
    frame = pd.concat([dataset.train, dataset.dev, dataset.test]).set_index("image_name")
    assert len(frame) == ORIGINAL_IMAGES
    for name, values in ROWS.items():  # the experts' labels win
        assert frame.loc[name, list(CLASSES)].tolist() == values, name
    assert frame.loc["img001", "path"] == str(tmp_path / "export" / "images" / "img001.png")
    assert frame.loc["img004", list(CLASSES)].tolist() == [0, 1, 0]  # only skipped: the original label
    assert frame.loc["img004", "path"] == str(original / "images" / "img004.png")
    assert dataset.source == f"{tmp_path / 'export' / 'corrected.csv'}+{original / 'original.csv'}"
    assert dataset.files["train"] == (tmp_path / "export" / "corrected.csv", original / "original.csv")
    with_folder = load_dataset(cell, "n=5", base_dir=tmp_path, img_dir=original / "images")
    assert set(pd.concat([with_folder.train, with_folder.dev])["path"].map(lambda path: Path(path).parent)) == {
        original / "images"}


def test_a_union_in_a_list_split_and_a_file_named_with_a_plus(tmp_path):
    random_images(tmp_path / "images", 8, size=(8, 8))
    _write_gt(tmp_path / "a.csv", {"img000": [1, 0, 0], "img001": [0, 1, 0]})
    _write_gt(tmp_path / "b.csv", {"img001": [0, 0, 1], "img002": [0, 0, 1], "img003": [1, 0, 0]})
    _write_gt(tmp_path / "dev.csv", {"img004": [0, 1, 0], "img005": [0, 0, 1]})
    _write_gt(tmp_path / "test.csv", {"img006": [1, 0, 0]})
    dataset = load_dataset("a.csv+b.csv;dev.csv;test.csv", "list", base_dir=tmp_path)
    assert dataset.train["image_name"].tolist() == ["img000", "img001", "img002", "img003"]
    assert dataset.train[list(CLASSES)].to_numpy().tolist()[1] == [0, 1, 0]
    assert dataset.source == f"{tmp_path / 'a.csv'}+{tmp_path / 'b.csv'};{tmp_path / 'dev.csv'};{tmp_path / 'test.csv'}"
    assert dataset.files == {"train": (tmp_path / "a.csv", tmp_path / "b.csv"), "dev": (tmp_path / "dev.csv",),
                             "test": (tmp_path / "test.csv",)}
    assert list(dataset.files) == ["train", "dev", "test"]
    _write_gt(tmp_path / "c++.csv", {f"img00{index}": [1, 0, 0] if index % 2 else [0, 1, 0] for index in range(8)})
    assert load_dataset("c++.csv", "n=2", base_dir=tmp_path).source == str(tmp_path / "c++.csv")  # as before


@pytest.mark.parametrize("cell, split, error, fragments", [
    ("a.csv+missing.csv", "n=1", MissingFileError,
     ["Ground-truth CSV not found: file 2 of the '+' union", "missing.csv", "Received: dataset='a.csv+missing.csv'"]),
    ("a.csv+", "n=1", DatasetError, ["needs a CSV file on each side", "Received: dataset='a.csv+'"]),
    ("a.csv+other.csv", "frac=0.2", DatasetError, ["other.csv: class columns A, B, X differ from those of",
                                                   "need the same class columns"]),
    ("a.csv+bad.csv", "n=1", DatasetError, ["bad.csv: class values must be 0 or 1"]),
    ("a+b", "pre", MissingFileError, ["works with split frac, n, kfold and list, not pre"]),
    ("a.csv+b.csv", "n=1", MissingFileError, ["image(s) not found in", "b.csv", "img009"]),
])
def test_union_errors_name_the_file_and_the_cell(tmp_path, cell, split, error, fragments):
    random_images(tmp_path / "images", 6, size=(8, 8))
    _write_gt(tmp_path / "a.csv", {f"img00{index}": [1, 0, 0] if index % 2 else [0, 1, 0] for index in range(6)})
    _write_gt(tmp_path / "b.csv", {"img009": [1, 0, 0]})
    _write_gt(tmp_path / "other.csv", {"img000": [1, 0, 0]}, columns=["image_name", "A", "B", "X"])
    _write_gt(tmp_path / "bad.csv", {"img000": [2, 0, 0]})
    with pytest.raises(error) as raised:
        load_dataset(cell, split, base_dir=tmp_path)
    for fragment in fragments:
        assert fragment in str(raised.value), (fragment, str(raised.value))


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_row_trains_on_the_corrections_and_names_their_export(original, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _export("--db", str(original / "answers.db"), "--out", str(tmp_path / "export" / "corrected.csv"),
                     "--images", str(original / "images"), "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    export_run = json.loads((tmp_path / "export" / "corrected.csv.json").read_text())["run_id"]
    row = small_cnn_row(f"export/corrected.csv+{original / 'original.csv'}", split="n=5", epochs=2)
    outcome, uri = train_in_own_store(tmp_path, [row], "closing-the-loop")
    assert [row.status for row in outcome.rows] == ["FINISHED"], outcome
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("closing-the-loop").experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'")
    for split in ("train", "dev", "test"):
        assert run.data.tags[f"timl.dataset.{split}.source_run"] == export_run
        assert run.data.tags[f"timl.dataset.{split}.source"] == f"runs:/{export_run}/corrected.csv"
        assert run.data.tags[f"timl.dataset.{split}.reviewers"] == "Dr. A, Dr. B, Dr. C"
    inputs = {item.dataset.name: json.loads(item.dataset.source)["uri"] for item in run.inputs.dataset_inputs}
    union = f"{(tmp_path / 'export' / 'corrected.csv').resolve()}+{(original / 'original.csv').resolve()}"
    assert inputs == {"corrected+original-train": union, "corrected+original-dev": union,
                      "corrected+original-test": union}
    assert run.data.metrics["train/samples"] == ORIGINAL_IMAGES - 10
    assert client.get_run(export_run).data.tags["timl.command"] == "review-export"
