"""An OpenAPI 3 description of the TIML REST API, published at ``<rest>/openapi.json``."""

from __future__ import annotations

from timl import __version__
from timl.xai import list_explainers

#: Query parameters of ``explain``: query name -> (the explainer parameter it sets, type, lowest, highest). Each
#: goes to the explainers that take that parameter (``timl.xai.EXPLAINERS``); the server checks the range.
EXPLAIN_QUERY = {"masks": ("num_masks", int, 1, 20000), "cells": ("mask_cells", int, 2, 64),
                 "keep": ("keep_probability", float, 0.01, 0.99)}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _upload() -> dict:
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "An image file"}}}}}}


def _query(name: str, kind: type, low, high) -> dict:
    return {"name": name, "in": "query",
            "schema": {"type": "integer" if kind is int else "number", "minimum": low, "maximum": high}}


def _json(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _evaluate_paths(rest_prefix: str) -> dict:
    """The review routes behind evaluate.html (:mod:`timl.serving.reviews`), under ``<rest>/evaluate``."""
    base = f"{rest_prefix}/evaluate"
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
            "description": "A name that GET images lists, with or without the file's suffix"}
    missing = _error("No EVALUATION_IMAGES_DIR configured, or no such image")
    answer = {"type": "object", "required": ["image", "evaluator"], "properties": {
        "image": {"type": "string"}, "evaluator": {"type": "string"},
        "agree": {"type": "boolean", "description": "Required unless skipped"}, "skipped": {"type": "boolean"},
        "label": {"type": "string", "description": "The correct class; required when agree is false"},
        "comment": {"type": "string"}}}
    return {
        f"{base}/images": {"get": {"summary": "The names of the images to review (EVALUATION_IMAGES_DIR), in "
                                              "EVALUATION_ORDER", "responses": {"200": _json("Image names"),
                                                                                "404": missing}}},
        f"{base}/images/{{name}}": {"get": {"summary": "One image to review", "parameters": [name], "responses": {
            "200": {"description": "The image file", "content": {"image/*": {"schema": {"type": "string",
                                                                                       "format": "binary"}}}},
            "404": missing}}},
        f"{base}/images/{{name}}/analysis": {"get": {
            "summary": "The served model's classification and explanation of one image to review",
            "parameters": [name], "responses": {"200": _json("Classification and explanation"), "404": missing}}},
        f"{base}/answers": {
            "post": {"summary": "Store one reviewer's answer on one image",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": answer}}},
                     "responses": {"201": _json("The stored answer, with the served model's prediction"),
                                   "400": _error("A missing or malformed field, or an unknown image or class")}},
            "get": {"summary": "One reviewer's current answers (where to resume)",
                    "parameters": [{"name": "reviewer", "in": "query", "schema": {"type": "string"},
                                    "description": "The name typed on the page (not needed with a token)"}],
                    "responses": {"200": _json("The reviewer's answers (agree and skipped as true/false)"),
                                  "400": _error("No reviewer named")}}},
        f"{base}/answers.csv": {"get": {"summary": "Every answer, as a CSV download", "responses": {
            "200": {"description": "The answers", "content": {"text/csv": {"schema": {"type": "string"}}}}}}},
    }


def openapi_document(rest_prefix: str = "/api") -> dict:
    """The OpenAPI document of the REST API under ``rest_prefix``."""
    errors = {"400": _error("Bad request: not an image, a missing field, a bad parameter"),
              "401": _error("No valid API token (only when the server is configured with API_TOKENS_FILE)"),
              "404": _error("Unknown method or layer"), "413": _error("Upload too large")}
    busy = {"503": {**_error("Every explanation slot busy and the queue full: retry after the seconds given"),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
            "504": _error("The explanation ran past EXPLAIN_TIMEOUT_S and was stopped")}
    return {
        "openapi": "3.0.3",
        "info": {"title": "TIML REST API", "version": __version__,
                 "description": "Classify and explain images with a TIML model."},
        "paths": {
            f"{rest_prefix}/ping": {"get": {"summary": "Is the server alive? Answers pong", "responses": {
                "200": {"description": "pong", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            f"{rest_prefix}/echo/{{text}}": {"get": {
                "summary": "Answers 'You told me <text>'",
                "parameters": [{"name": "text", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The text echoed",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            f"{rest_prefix}/info": {"get": {"summary": "The model (classification.model_file, as the original TIML "
                                                       "answered), its classes and what can be explained",
                                            "responses": {"200": {"description": "Model information",
                                                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            f"{rest_prefix}/model_card": {"get": {
                "summary": "The served registered version's model card: intended use, data, test scores with "
                           "intervals, what was not evaluated (JSON, or Markdown with format=md)",
                "parameters": [{"name": "format", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["json", "md"], "default": "json"}}],
                "responses": {"200": {"description": "The model card",
                                      "content": {"application/json": {"schema": {"type": "object"}},
                                                  "text/plain": {"schema": {"type": "string"}}}},
                              "404": _error("The served model is not a registered version with a card")}}},
            f"{rest_prefix}/classify": {"post": {
                "summary": "Classify one image", "requestBody": _upload(),
                "responses": {"200": {"description": "Probabilities and TIML confidences per class",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Classification"}}}},
                              **errors,
                              "503": {**_error("The model cannot be loaded, or it is restarting (then retry after "
                                               "the seconds given)"),
                                      "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}}},
            f"{rest_prefix}/preview": {"post": {
                "summary": "The uploaded image as a PNG a browser can draw (DICOM, TIFF), orientation applied",
                "parameters": [{"name": "size", "in": "query", "description": "Longest side in pixels",
                                "schema": {"type": "integer", "minimum": 32, "maximum": 2048, "default": 1024}}],
                "requestBody": _upload(),
                "responses": {"200": {"description": "The image's pixels as PNG (no metadata of the file)",
                                      "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
                              **errors}}},
            f"{rest_prefix}/explain/{{method}}/{{layer}}": {"post": {
                "summary": "Explain the classification of one image",
                "parameters": [
                    {"name": "method", "in": "path", "required": True, "schema": {"type": "string", "enum": list_explainers()}},
                    {"name": "layer", "in": "path", "required": True, "schema": {"type": "string"}},
                    *(_query(name, kind, low, high) for name, (_, kind, low, high) in EXPLAIN_QUERY.items()),
                    {"name": "seed", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "class", "in": "query", "schema": {"type": "string"}}],
                "requestBody": _upload(),
                "responses": {"200": {"description": "Grey saliency, heatmap and composite as base64 PNG",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Explanation"}}}},
                              **errors, **busy}}},
            **_evaluate_paths(rest_prefix),
        },
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "Needed only when the server's configuration names API_TOKENS_FILE"}}, "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Classification": {"type": "object", "properties": {
                "filename": {"type": "string"}, "prediction": {"type": "array", "items": {"type": "number"}},
                "confidence": {"type": "array", "items": {"type": "number"}},
                "classes": {"type": "array", "items": {"type": "string"}}, "predicted_class": {"type": "string"},
                "tta": {"type": "string", "description": "With the TTA setting: its preset (prediction is the mean "
                                                         "over its views)"},
                "tta_std": {"type": "array", "items": {"type": "number"},
                            "description": "With the TTA setting: the views' standard deviation per class"}}},
            "Explanation": {"type": "object", "properties": {
                "filename": {"type": "string"}, "method": {"type": "string"}, "layer": {"type": "string"},
                "args": {"type": "object"}, "grey": {"type": "string"}, "heatmap": {"type": "string"},
                "comp": {"type": "string"}, "class_index": {"type": "integer"}, "score": {"type": "number"}}},
        }},
    }
