"""Rendering a saliency map as the original TIML's three images: grey, coloured heatmap and composite."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from timl.errors import ConfigError


def resize_saliency(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a saliency map (bilinear) to ``size`` = (width, height): float32 (height, width) in [0, 1]."""
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != (size[1], size[0]):
        resized = Image.fromarray(saliency).resize(size, Image.Resampling.BILINEAR)
        saliency = np.asarray(resized, dtype=np.float32)
    return np.clip(saliency, 0.0, 1.0)


def get_colormap(name: str):
    """A matplotlib colormap by name.

    Raises:
        ConfigError: matplotlib has no colormap of that name.
    """
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except (KeyError, TypeError) as error:
        examples = ", ".join(("jet", "viridis", "inferno", "magma", "turbo", "hot", "gray"))
        raise ConfigError(f"Unknown colormap. Expected a matplotlib colormap name such as {examples}. "
                          f"Received: colormap={name!r}") from error


def render(image: Image.Image, saliency: np.ndarray, colormap: str = "jet",
           alpha: float = 0.5) -> tuple[Image.Image, Image.Image, Image.Image]:
    """Renders a saliency map over an image.

    Args:
        image: the original image (any size; converted to RGB).
        saliency: float array (h, w) in [0, 1]; resized (bilinear) to the image's size if it differs.
        colormap: a matplotlib colormap name. Defaults to "jet".
        alpha: weight of the heatmap in the composite, in [0, 1]. Defaults to 0.5.

    Returns:
        ``(grey, heatmap, composite)``: the saliency in grey (mode "L"), through the colormap (RGB), and the
        image alpha-blended with the heatmap (RGB), all of the image's size.

    Raises:
        ConfigError: unknown colormap or alpha outside [0, 1].
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"Invalid alpha: expected a number in [0, 1]. Received: alpha={alpha!r}")
    cmap = get_colormap(colormap)
    image = image.convert("RGB")
    saliency = resize_saliency(saliency, image.size)
    grey = Image.fromarray(np.round(saliency * 255.0).astype(np.uint8))
    colours = cmap(saliency)[..., :3]
    heatmap = Image.fromarray(np.round(colours * 255.0).astype(np.uint8))
    composite = Image.blend(image, heatmap, float(alpha))
    return grey, heatmap, composite


def png_base64(image) -> str:
    """A PIL image as a base64-encoded PNG file (the JSON form of the grey, heatmap and composite images)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
