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
