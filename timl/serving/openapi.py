"""An OpenAPI 3 description of the TIML REST API, published at ``<rest>/openapi.json``."""

from __future__ import annotations

from timl import __version__

METHODS = ["gradcam", "gradcam++", "scorecam", "smoothgrad", "rise"]


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _upload() -> dict:
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": "An image file"}}}}}}


def openapi_document(rest_prefix: str = "/api") -> dict:
    """The OpenAPI document of the REST API under ``rest_prefix``."""
    errors = {"400": _error("Bad request: not an image, a missing field, a bad parameter"),
              "404": _error("Unknown method or layer"), "413": _error("Upload too large")}
    return {
        "openapi": "3.0.3",
        "info": {"title": "TIML REST API", "version": __version__,
                 "description": "Classify and explain images with a TIML model."},
        "paths": {
            f"{rest_prefix}/info": {"get": {"summary": "The model, its classes and what can be explained",
                                            "responses": {"200": {"description": "Model information",
                                                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            f"{rest_prefix}/classify": {"post": {
                "summary": "Classify one image", "requestBody": _upload(),
                "responses": {"200": {"description": "Probabilities and TIML confidences per class",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Classification"}}}},
                              **errors}}},
            f"{rest_prefix}/explain/{{method}}/{{layer}}": {"post": {
                "summary": "Explain the classification of one image",
                "parameters": [
                    {"name": "method", "in": "path", "required": True, "schema": {"type": "string", "enum": METHODS}},
                    {"name": "layer", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "masks", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 20000}},
                    {"name": "cells", "in": "query", "schema": {"type": "integer", "minimum": 2, "maximum": 64}},
                    {"name": "keep", "in": "query", "schema": {"type": "number", "minimum": 0.01, "maximum": 0.99}},
                    {"name": "seed", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "class", "in": "query", "schema": {"type": "string"}}],
                "requestBody": _upload(),
                "responses": {"200": {"description": "Grey saliency, heatmap and composite as base64 PNG",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Explanation"}}}},
                              **errors}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Classification": {"type": "object", "properties": {
                "filename": {"type": "string"}, "prediction": {"type": "array", "items": {"type": "number"}},
                "confidence": {"type": "array", "items": {"type": "number"}},
                "classes": {"type": "array", "items": {"type": "string"}}, "predicted_class": {"type": "string"}}},
            "Explanation": {"type": "object", "properties": {
                "filename": {"type": "string"}, "method": {"type": "string"}, "layer": {"type": "string"},
                "args": {"type": "object"}, "grey": {"type": "string"}, "heatmap": {"type": "string"},
                "comp": {"type": "string"}, "class_index": {"type": "integer"}, "score": {"type": "number"}}},
        }},
    }
