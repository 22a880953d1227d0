"""Explanations of image classifications: Grad-CAM, Grad-CAM++, Score-CAM, SmoothGrad and RISE.

``explain(model, image, method)`` returns an :class:`Explanation` with the saliency map and the original TIML's
three images (grey, heatmap, composite) at the original image's resolution; ``explain_array`` works on a
preprocessed model input and returns the map at the model's resolution. ``timl.xai.metrics`` measures how
faithful a map is (deletion and insertion, as in the RISE paper).

TensorFlow, Keras and tf-keras-vis are imported only when an explanation is computed.
"""

from timl.xai.base import Explanation, ExplainerSpec, clear_cache, conv_layer_names, last_conv_layer
from timl.xai.explainers import DEFAULT_EXPLAINER, EXPLAINERS, SaliencyMap, explain, explain_array, get_explainer, list_explainers
from timl.xai.render import png_base64, render

__all__ = ["DEFAULT_EXPLAINER", "EXPLAINERS", "Explanation", "ExplainerSpec", "SaliencyMap", "clear_cache", "conv_layer_names", "explain",
           "explain_array", "get_explainer", "last_conv_layer", "list_explainers", "png_base64", "render"]
