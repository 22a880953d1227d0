"""The evaluation API behind evaluate.html: listing, fetching (no path traversal), answers, CSV."""

from __future__ import annotations

import csv
import dataclasses
import io
import threading
import time

import numpy as np
import pytest

from helpers import encoded, tiny_classifier


@pytest.fixture
def client(tmp_path):
    from timl.serving import create_app

    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "a.png").write_bytes(encoded())
    (tmp_path / "review" / "b.JPG").write_bytes(encoded(format_name="JPEG"))
    (tmp_path / "review" / "notes.txt").write_text("not an image")
    (tmp_path / "review" / "._a.png").write_bytes(b"macOS metadata, not an image")
    (tmp_path / "review" / "sub.png").mkdir()
    (tmp_path / "secret.png").write_bytes(encoded())
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(tmp_path / "review"),
                      "EVALUATION_DB": str(tmp_path / "new" / "answers.db")}, classifier=tiny_classifier())
    return app.test_client()


def test_listing_and_fetching(client, tmp_path):
    assert client.get("/api/evaluate/images").get_json() == {"images": ["a.png", "b.JPG"], "order": "name"}
    assert client.get("/api/evaluate/images/a.png").data == encoded()
    for name in ("notes.txt", "._a.png", "sub.png", "..%2Fsecret.png", "%2Fetc%2Fpasswd", "../secret.png",
                 "..\\secret.png", "%2E%2E%2Fsecret.png", str(tmp_path / "secret.png"), "review/a.png"):
        answer = client.get(f"/api/evaluate/images/{name}")
        assert answer.status_code == 404 and answer.is_json, name


def test_review_images_analysis_and_answers_are_never_cached(client):
    """Patients' images and the experts' answers: "private, no-store", for browsers and proxies alike."""
    answer = {"image": "a.png", "evaluator": "Dr. A", "agree": True, "label": "A", "predicted": "A"}
    responses = [client.get("/api/evaluate/images/a.png"), client.get("/api/evaluate/images/a.png/analysis"),
                 client.get("/api/evaluate/images"), client.post("/api/evaluate/answers", json=answer),
                 client.get("/api/evaluate/answers?reviewer=Dr.%20A"), client.get("/api/evaluate/answers.csv"),
                 client.get("/api/evaluate/images/nope.png")]
    assert [response.status_code for response in responses] == [200, 200, 200, 201, 200, 200, 404]
    for response in responses:
        assert response.headers["Cache-Control"] == "private, no-store", response.request.path
        assert "Expires" not in response.headers
    assert responses[0].data == encoded() and responses[0].headers.get("ETag")  # still a conditional answer


def test_answers_are_validated_and_downloadable(client):
    good = {"image": "a.png", "evaluator": "Dr. A", "agree": True, "label": "A", "predicted": "A", "comment": ""}
    assert client.post("/api/evaluate/answers", json=good).status_code == 201
    disagree = dict(good, image="b.JPG", agree=False, label="C", comment="looks like C, 'quoted', a,b")
    assert client.post("/api/evaluate/answers", json=disagree).status_code == 201
    bad_cases = [
        (dict(good, agree="yes"), "agree"),
        ({k: v for k, v in good.items() if k != "evaluator"}, "evaluator"),
        (dict(good, image="../secret.png"), "Unknown image"),
        (dict(good, agree=False, label=""), "choose the correct class"),
        (dict(good, comment="x" * 3000), "comment"),
        ("not an object", "JSON object"),
    ]
    for payload, fragment in bad_cases:
        answer = client.post("/api/evaluate/answers", json=payload)
        assert answer.status_code == 400 and fragment in answer.get_json()["error"], payload
    download = client.get("/api/evaluate/answers.csv")
    assert download.status_code == 200 and "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [(row["image"], row["agree"], row["label"]) for row in rows] == [("a.png", "1", "A"), ("b.JPG", "0", "C")]
    assert rows[1]["comment"] == "looks like C, 'quoted', a,b"


def test_an_answer_records_the_servers_prediction_and_a_known_class(client, tmp_path):
    """``predicted`` and ``confidence`` are the served model's own for the image, whatever the client sends, and
    ``label`` must be one of the model's classes (issue 21, finding 8)."""
    from timl.images import decode_image

    classifier = tiny_classifier()
    probabilities = classifier.predict_images([decode_image(tmp_path / "review" / "a.png")])[0]
    own = classifier.class_names[int(probabilities.argmax())]
    forged = {"image": "a.png", "evaluator": "Dr. A", "agree": True, "label": "", "predicted": "Z",
              "confidence": 0.01, "comment": ""}
    stored = client.post("/api/evaluate/answers", json=forged)
    assert stored.status_code == 201
    assert stored.get_json()["predicted"] == own and stored.get_json()["confidence"] == pytest.approx(
        float(probabilities.max()), abs=1e-6)
    unknown = client.post("/api/evaluate/answers", json=dict(forged, agree=False, label="Z"))
    assert unknown.status_code == 400 and unknown.get_json()["error"] == (
        "Unknown class in 'label'. Expected one of: A, B, C. Received: label='Z'")
    rows = list(csv.DictReader(io.StringIO(client.get("/api/evaluate/answers.csv").get_data(as_text=True))))
    assert [(row["predicted"], row["label"], row["agree"]) for row in rows] == [(own, "", "1")]


def test_not_configured(tmp_path):
    from timl.serving import create_app

    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5"}, classifier=tiny_classifier()).test_client()
    answer = client.get("/api/evaluate/images")
    assert answer.status_code == 404 and "EVALUATION_IMAGES_DIR" in answer.get_json()["error"]
    elsewhere = tmp_path / "no-such-folder"
    client = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(elsewhere)},
                        classifier=tiny_classifier()).test_client()
    answer = client.get("/api/evaluate/images")  # the configured path is the server's: never told to a client
    assert answer.status_code == 404 and "EVALUATION_IMAGES_DIR" in answer.get_json()["error"]
    assert str(tmp_path) not in answer.get_data(as_text=True)


def test_csv_cells_are_not_spreadsheet_formulas(client):
    answer = {"image": "a.png", "evaluator": "=HYPERLINK(\"http://x\")", "agree": False, "label": "B",
              "predicted": "A", "comment": "+1 -2 @3"}
    assert client.post("/api/evaluate/answers", json=answer).status_code == 201
    row = next(csv.DictReader(io.StringIO(client.get("/api/evaluate/answers.csv").get_data(as_text=True))))
    assert row["evaluator"] == "'=HYPERLINK(\"http://x\")" and row["comment"] == "'+1 -2 @3"
    assert row["created"][:2] == "20" and row["label"] == "B"


def test_concurrent_answers_are_all_stored_in_wal_mode(client, tmp_path):
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    def post(index: int) -> int:
        answer = {"image": "a.png", "evaluator": f"expert {index}", "agree": True, "label": "", "predicted": "A",
                  "comment": ""}
        return client.application.test_client().post("/api/evaluate/answers", json=answer).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, range(40))) == {201}
    rows = list(csv.DictReader(io.StringIO(client.get("/api/evaluate/answers.csv").get_data(as_text=True))))
    assert sorted(row["evaluator"] for row in rows) == sorted(f"expert {index}" for index in range(40))
    with sqlite3.connect(tmp_path / "new" / "answers.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _scored_listing(app, client) -> dict:
    """The uncertainty listing once the worker's background scoring (started by a first listing) has ended."""
    assert client.get("/api/evaluate/images").status_code == 200
    assert app.extensions["timl_model"].ranking.wait(timeout=120)
    return client.get("/api/evaluate/images").get_json()


def test_review_order_by_uncertainty_and_one_analysis_call_per_image(tmp_path):
    """EVALUATION_ORDER uncertainty puts the images the model is least sure of first (smallest margin between its
    two top classes); the analysis of a reviewed image is one call, with only the images asked for, at the size
    asked for."""
    import base64

    from PIL import Image

    from timl.serving import create_app

    classifier = tiny_classifier()
    folder = tmp_path / "review"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(6):
        pixels = (rng.random((40 + 10 * index, 50, 3)) * 255 * (index + 1) / 6).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index}.png")
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(folder),
                      "EVALUATION_DB": str(tmp_path / "a.db"), "EVALUATION_ORDER": "uncertainty"}, classifier=classifier)
    client = app.test_client()
    listing = _scored_listing(app, client)
    assert listing["order"] == "uncertainty" and sorted(listing["images"]) == [f"img{i}.png" for i in range(6)]
    expected = {}
    for index in range(6):
        top = np.sort(classifier.predict_images([folder / f"img{index}.png"])[0])[::-1]
        expected[f"img{index}.png"] = 1 - (top[0] - top[1])
    assert listing["images"] == sorted(expected, key=lambda name: -expected[name])
    assert all(abs(listing["uncertainty"][name] - expected[name]) < 1e-5 for name in expected)

    analysis = client.get("/api/evaluate/images/img5.png/analysis?method=gradcam&images=heatmap&size=32").get_json()
    assert analysis["image"] == "img5.png" and analysis["predicted_class"] in "ABC"
    assert set(analysis["explanation"]) == {"method", "layer", "score", "class_name", "heatmap"}  # no grey, no comp
    heatmap = Image.open(io.BytesIO(base64.b64decode(analysis["explanation"]["heatmap"])))
    assert max(heatmap.size) == 32  # 50x90 shown at 32 px: 18x32
    assert client.get("/api/evaluate/images/nope.png/analysis").status_code == 404
    bad = client.get("/api/evaluate/images/img5.png/analysis?images=everything")
    assert bad.status_code == 400 and "grey, heatmap, comp" in bad.get_json()["error"]


def _gated(classifier, gate: threading.Semaphore, calls: list):
    """The classifier, whose every model call records (its thread, its batch size) and then waits for the test to
    release ``gate`` once (at most 30 s)."""

    class Gated(type(classifier)):
        def predict_arrays(self, images, *args, **kwargs):
            calls.append((threading.get_ident(), len(images)))
            gate.acquire(timeout=30)
            return super().predict_arrays(images, *args, **kwargs)

    return Gated(**{field.name: getattr(classifier, field.name) for field in dataclasses.fields(classifier)
                    if field.init})


def _wait_for_listing(client, scored: int) -> dict:
    deadline = time.monotonic() + 120
    while True:
        listing = client.get("/api/evaluate/images").get_json()
        if listing["scored"] >= scored or time.monotonic() > deadline:
            return listing
        time.sleep(0.05)


def test_uncertainty_order_is_computed_in_batches_outside_the_request(tmp_path):
    """EVALUATION_ORDER uncertainty over 40 images: the first listing answers at once (name order, 0 of 40 scored)
    while the model is held; the model is never called in a request and never with more than SCORING_BATCH images;
    a listing during the scoring puts the scored images first; once done, the order is the model's own margins,
    and later listings call the model no more."""
    from PIL import Image

    from timl.serving import create_app
    from timl.serving.ranking import SCORING_BATCH

    classifier = tiny_classifier()
    folder = tmp_path / "review"
    folder.mkdir()
    rng = np.random.default_rng(4)
    names = [f"img{index:02d}.png" for index in range(40)]
    for index, name in enumerate(names):
        pixels = rng.random((20 + index % 7, 24, 3)) * rng.integers(30, 256, 3)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
    gate, calls = threading.Semaphore(0), []
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(folder),
                      "EVALUATION_DB": str(tmp_path / "a.db"), "EVALUATION_ORDER": "uncertainty"},
                     classifier=_gated(classifier, gate, calls))
    client = app.test_client()

    start = time.perf_counter()
    first = client.get("/api/evaluate/images").get_json()
    assert time.perf_counter() - start < 10  # the model is held for 30 s: the listing did not wait for it
    assert first == {"images": names, "order": "uncertainty", "scored": 0, "total": 40, "uncertainty": {}}

    gate.release()  # the first batch
    partial = _wait_for_listing(client, SCORING_BATCH)
    assert partial["scored"] == SCORING_BATCH and partial["total"] == 40
    scored_first = names[:SCORING_BATCH]  # scored in name order
    assert sorted(partial["images"][:SCORING_BATCH]) == scored_first
    assert partial["images"][:SCORING_BATCH] == sorted(scored_first, key=lambda n: (-partial["uncertainty"][n], n))
    assert partial["images"][SCORING_BATCH:] == names[SCORING_BATCH:]

    gate.release()  # the second batch
    final = _wait_for_listing(client, 40)
    expected = {}
    for name in names:
        top = np.sort(classifier.predict_images([folder / name])[0])[::-1]
        expected[name] = 1 - (top[0] - top[1])
    assert final["scored"] == 40
    assert all(abs(final["uncertainty"][name] - expected[name]) < 1e-5 for name in names)
    assert final["images"] == sorted(names, key=lambda n: (-expected[n], n))
    request_thread = threading.get_ident()  # the test client runs the app in this thread
    assert [size for _, size in calls] == [SCORING_BATCH, 40 - SCORING_BATCH]
    assert all(thread != request_thread for thread, _ in calls)
    client.get("/api/evaluate/images")
    assert len(calls) == 2  # cached per file


def test_an_unreadable_review_image_does_not_break_the_uncertainty_order(tmp_path):
    """A file that does not decode keeps no score and is listed after the scored images (the listing used to
    answer 400 for the whole folder)."""
    from timl.serving import create_app

    folder = tmp_path / "review"
    folder.mkdir()
    for name in ("a.png", "c.png"):
        (folder / name).write_bytes(encoded())
    (folder / "b.png").write_bytes(b"not a PNG")
    app = create_app({"CLASSIFICATION_MODEL": "tiny.h5", "EVALUATION_IMAGES_DIR": str(folder),
                      "EVALUATION_DB": str(tmp_path / "a.db"), "EVALUATION_ORDER": "uncertainty"},
                     classifier=tiny_classifier())
    listing = _scored_listing(app, app.test_client())
    assert listing["scored"] == 2 and listing["total"] == 3 and listing["images"][-1] == "b.png"
    assert sorted(listing["uncertainty"]) == ["a.png", "c.png"]


def test_info_names_the_model_not_its_path_and_the_pages_have_an_icon(tmp_path):
    from timl.serving import create_app

    client = create_app({"CLASSIFICATION_MODEL": str(tmp_path / "models" / "lesions.h5")},
                        classifier=tiny_classifier()).test_client()
    info = client.get("/api/info").get_json()
    assert info["model_info"]["name"] == "lesions" and info["model_info"]["label"] == "lesions"
    assert str(tmp_path) not in info["model_info"]["label"] and info["max_upload_mb"] == 10
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"


def test_a_file_that_is_not_an_image_gets_a_plain_message(client):
    answer = client.post("/api/classify", data={"file": (io.BytesIO(b"just some text"), "notes.jpg")},
                         content_type="multipart/form-data")
    message = answer.get_json()["error"]
    assert answer.status_code == 400 and "not an image file" in message and "notes.jpg" in message
    assert "BytesIO" not in message and "0x" not in message


def test_answers_read_back_with_the_types_they_were_posted_with(client):
    """``agree`` and ``skipped`` are true/false both ways (a POST's booleans, not the store's 1/0)."""
    answer = {"image": "a.png", "evaluator": "Dr. A", "agree": False, "label": "B", "predicted": "A"}
    assert client.post("/api/evaluate/answers", json=answer).status_code == 201
    skipped = {"image": "b.JPG", "evaluator": "Dr. A", "skipped": True}
    assert client.post("/api/evaluate/answers", json=skipped).status_code == 201
    read = client.get("/api/evaluate/answers?reviewer=Dr.%20A").get_json()["answers"]
    assert [(row["image"], row["agree"], row["skipped"]) for row in read] == [("a.png", False, False),
                                                                            ("b.JPG", False, True)]


def test_an_image_and_its_analysis_are_found_without_the_files_suffix(client):
    assert client.get("/api/evaluate/images/a").data == encoded()
    analysis = client.get("/api/evaluate/images/b/analysis")
    assert analysis.status_code == 200 and analysis.get_json() == client.get(
        "/api/evaluate/images/b.JPG/analysis").get_json()
    missing = client.get("/api/evaluate/images/nope/analysis")
    assert missing.status_code == 404 and "with or without the file's suffix" in missing.get_json()["error"]


def test_answers_record_the_model_as_a_uri_not_a_display_label(tmp_path):
    """The review export's provenance names models by what loads them again (issue 25)."""
    from timl.serving.config import ServerConfig
    from timl.serving.model import ModelHolder

    classifier = tiny_classifier()
    holder = ModelHolder(ServerConfig.from_mapping({"CLASSIFICATION_MODEL": str(tmp_path / "lesions.h5")}),
                         classifier)
    assert holder.review_facts()["model"] == "lesions.h5", "a file by its name: never the server's path"
    holder._description = {"name": "skin", "version": "3", "label": "skin v3 · 2026-11-30"}
    assert holder.review_facts()["model"] == "models:/skin/3", "a registered version, its alias resolved"
    holder._description = {"name": "a-run", "label": "a-run"}
    classifier.source = {"model_uri": "runs:/0123abcd/model", "run_id": "0123abcd"}
    assert holder.review_facts()["model"] == "runs:/0123abcd/model"
