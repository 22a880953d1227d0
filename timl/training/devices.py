"""The devices a row trains on: the default device, or all of its devices under ``tf.distribute.MirroredStrategy``.

A row whose ``gpus`` cell (or ``--row-gpus``) is 2 or more trains on every GPU its process sees (a Ray task sees
the GPUs Ray gave it), one model replica per GPU, gradients averaged each step. The table's ``batchsize`` is the
global batch: each of N replicas computes ``batchsize / N`` images a step, so a row learns the same way on one
device or several. With one device or none, no strategy is used.

``TIML_LOGICAL_CPUS=N`` (N >= 2) splits the CPU into N logical devices, so that the several-device path can be
run and tested on a machine without GPUs. Keras 3's ``keras.distribution`` does nothing on the TensorFlow backend
and ``MultiWorkerMirroredStrategy`` fails with Keras 3 models, so neither is used.
"""

from __future__ import annotations

import contextlib
import logging
import os

logger = logging.getLogger(__name__)

#: The environment variable that splits the CPU into logical devices.
LOGICAL_CPUS_VARIABLE = "TIML_LOGICAL_CPUS"


def split_cpu() -> int:
    """Splits the CPU into ``TIML_LOGICAL_CPUS`` logical devices, once, before TensorFlow sets up its devices.

    Returns:
        The number of logical CPU devices (1 when the variable is not set).
    """
    import tensorflow as tf

    count = int(os.environ.get(LOGICAL_CPUS_VARIABLE) or 1)
    if count < 2:
        return 1
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # the devices are set up already (a second row in the same process): keep them
        pass
    return len(tf.config.list_logical_devices("CPU"))


def strategy_for(gpus: float | None):
    """A MirroredStrategy over the process's devices for a row that asks for 2 or more GPUs, else None.

    Args:
        gpus: the row's GPUs (its ``gpus`` cell, else the executor's ``--row-gpus``).

    Returns:
        ``tf.distribute.MirroredStrategy`` over the visible GPUs (or, without GPUs, the logical CPUs of
        ``TIML_LOGICAL_CPUS``), or None for one device.
    """
    import tensorflow as tf

    if not gpus or gpus < 2:
        return None
    devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    if len(devices) < 2:
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        logger.warning("The row asks for %s GPUs but this process sees one device; training on it.", gpus)
        return None
    logger.info("Training on %d devices (MirroredStrategy): %s", len(devices), ", ".join(devices))
    return tf.distribute.MirroredStrategy(devices)


def scope(strategy):
    """The strategy's scope (the model and its optimizer are created in it), or a no-op without strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def undistributed(model, strategy):
    """The model as one device runs it: a copy with the same weights built outside the strategy (a distributed
    model's ``predict_on_batch`` returns each replica's outputs), or the model itself without strategy.

    The copy is not compiled: after training it only predicts and is saved.
    """
    if strategy is None:
        return model
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
