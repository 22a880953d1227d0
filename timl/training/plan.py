"""A row resolved (the first stage of a row's flow): its method, its checkpoint folder, its devices and weights.

Nothing here touches the row's data or its model; :func:`resolve_weights` checks the ``weights`` cell's file,
and the fit calls it once (after the row's cells are logged, so a row whose weights file is missing still shows
its cells).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from timl.config import RunConfig
from timl.errors import ConfigError

if TYPE_CHECKING:
    from timl.models import MethodSpec


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """One row, resolved: what every later stage of its flow reads.

    Attributes:
        config: the row's cells, parsed (:class:`timl.config.RunConfig`).
        spec: its method (:class:`timl.models.MethodSpec`).
        checkpoint_dir: the row's checkpoint folder (removed once the row is recorded).
        gpus: the GPUs the row trains on (its cell, else the executor's); 2 or more train under MirroredStrategy.
    """

    config: RunConfig
    spec: MethodSpec
    checkpoint_dir: Path
    gpus: float | None = None


def resolve_row(config: RunConfig, *, out_dir: Path, checkpoint_dir: Path | None = None,
                gpus: float | None = None) -> RowPlan:
    """Resolves a row: its method, its checkpoint folder (default ``out_dir/.backup/N``) and its GPUs (its
    ``gpus`` cell, else ``gpus``).

    Raises:
        ValueError: an unknown method (a validated row has a known one).
    """
    from timl import models

    return RowPlan(config, models.get_method(config.method),
                   Path(checkpoint_dir) if checkpoint_dir else Path(out_dir) / ".backup" / config.file_stem,
                   config.gpus if config.gpus is not None else gpus)


def resolve_weights(config: RunConfig) -> str:
    """The row's ``weights`` cell: default, imagenet, none, or the path of a weights file (beside the table).

    Raises:
        ConfigError: a weights file that does not exist.
    """
    from timl.models import WEIGHTS_CHOICES

    if config.weights in WEIGHTS_CHOICES:
        return config.weights
    path = config.resolve_path(config.weights)
    if not path.is_file():
        raise ConfigError(f"{config.table_path}, row {config.row}: weights file not found. "
                          f"Received: weights={config.weights!r}")
    return str(path)
