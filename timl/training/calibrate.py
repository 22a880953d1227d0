"""A row's calibration (between fit and evaluate): temperature scaling fitted on the dev set, put into the model.

A row whose ``calibration`` cell is ``temperature`` gets, after training, the temperature (softmax: one; sigmoid:
one per class) of least dev-set negative log likelihood (:func:`timl.calibration.fit_temperatures`), applied by a
``TemperatureScaling`` layer appended to the model (:mod:`timl.models.layers`). The kept model is the calibrated
one: the logged .h5, the pyfunc, predict, explain, the REST server and the pages all give calibrated
probabilities, and the row's dev and test reports score them. The run logs the temperatures
(``calibration/temperature``) and the dev and test scores before calibration beside the calibrated ones
(``dev/ece_uncalibrated`` next to ``dev/ece``: :mod:`timl.metric_names`). The predicted classes do not change.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from timl import metric_names as names
from timl.calibration import apply_temperatures, calibration_summary, fit_temperatures
from timl.errors import ConfigError
from timl.training.data import RowData
from timl.training.loop import Trained
from timl.training.plan import RowPlan

logger = logging.getLogger(__name__)

#: The output activations temperature scaling applies to: softmax (one temperature), sigmoid (one per class).
SCALABLE_ACTIVATIONS = ("softmax", "sigmoid")


def calibrate(plan: RowPlan, data: RowData, trained: Trained) -> Trained:
    """The fitted model, calibrated as the row's ``calibration`` cell says (``none``: as it is).

    Raises:
        ConfigError: ``temperature`` on a row without a dev set, or on a model whose output is not a softmax
            or sigmoid layer.
    """
    if plan.config.calibration == "none":
        return trained
    _check_applicable(plan, data, trained.model)
    multi_label = plan.spec.multi_label
    probabilities = {split: _probabilities(plan, data, trained, split) for split in (names.DEV, names.TEST)
                     if data.dataset.sizes().get(split)}
    temperatures = fit_temperatures(data.dataset.labels(names.DEV), probabilities[names.DEV], multi_label=multi_label)
    metrics = dict(trained.metrics)
    for split, probability in probabilities.items():
        before = calibration_summary(data.dataset.labels(split), probability, multi_label=multi_label)
        metrics.update({names.uncalibrated_metric(split, name): before[name] for name in names.CALIBRATION_COMPARED})
    if multi_label:
        metrics.update({names.temperature_metric(name): value
                        for name, value in zip(data.dataset.class_names, temperatures)})
    else:
        metrics[names.temperature_metric()] = temperatures[0]
    logger.info("Row %d: temperature scaling on %d dev images, temperatures %s", plan.config.row,
                len(probabilities[names.DEV]), ", ".join(f"{value:.3f}" for value in temperatures))
    predictions = {split: apply_temperatures(probability, temperatures, multi_label=multi_label)
                   for split, probability in trained.predictions.items()}
    return dataclasses.replace(trained, model=with_temperatures(trained.model, temperatures, multi_label),
                               predictions=predictions, metrics=metrics)


def with_temperatures(model, temperatures, multi_label: bool):
    """``model`` followed by a ``TemperatureScaling`` layer (the model's own layers, shared, unchanged)."""
    import keras

    from timl.models.layers import ensure_registered

    layer = ensure_registered()["TemperatureScaling"](temperatures, multi_label=multi_label,
                                                      name="temperature_scaling")
    return keras.Model(model.inputs, layer(model.outputs[0]), name=model.name)


def _check_applicable(plan: RowPlan, data: RowData, model) -> None:
    from timl.xai.base import output_activation

    where = f"{plan.config.table_path or 'table'}, row {plan.config.row}, column 'calibration'"
    activation = output_activation(model)
    if activation not in SCALABLE_ACTIVATIONS:
        raise ConfigError(f"{where}: temperature scaling needs a model whose output layer is a "
                          f"{' or '.join(SCALABLE_ACTIVATIONS)}; method {plan.config.method} ends with "
                          f"{activation}. Use calibration=none for this method. Received: calibration="
                          f"{plan.config.calibration!r}")
    if not data.dataset.sizes().get(names.DEV):
        raise ConfigError(f"{where}: temperature scaling is fitted on the dev set, and split "
                          f"{plan.config.split!r} of this dataset leaves it empty. Use a split with a dev set "
                          f"(frac=F, n=N, list with a dev file, pre with a -dev.csv) or calibration=none. "
                          f"Received: calibration={plan.config.calibration!r}")


def _probabilities(plan: RowPlan, data: RowData, trained: Trained, split: str) -> np.ndarray:
    """The fitted model's probabilities on a split: those the fit already has (a head on cached activations),
    else predicted from the split's decoded images."""
    if split in trained.predictions:
        return np.asarray(trained.predictions[split], dtype=float)
    from timl.classifier import Classifier

    classifier = Classifier(trained.model, data.preprocessing, data.dataset.class_names, plan.spec.multi_label)
    return np.asarray(classifier.predict_arrays(data.arrays[split], plan.config.batchsize), dtype=float)
