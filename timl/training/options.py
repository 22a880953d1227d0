"""The table-level options: what ``python -m timl.train``'s flags, the MLproject's parameters and
:func:`timl.training.train_table`'s ``options`` say about a whole table (its rows say the rest).

One field per flag, under the flag's name (``--row-gpus`` is ``row_gpus``), so the CLI and the MLproject map to
the options by name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from timl.champion import parse_gates
from timl.errors import ConfigError
from timl.intervals import DEFAULT_RESAMPLES
from timl.metric_names import DEFAULT_SELECT_BY

#: The executors ``--executor`` chooses from.
EXECUTORS = ("local", "ray")

#: Fields where an empty string means "not given" (the MLproject passes '' for a parameter left out).
_OPTIONAL_FIELDS = ("img_dir", "out_dir", "experiment", "tracking_uri", "rows", "register", "ray_address",
                    "checkpoint_dir")


@dataclasses.dataclass(frozen=True)
class TableOptions:
    """How a table is trained, beside what its rows say.

    Attributes:
        img_dir: the image folder for every row. Defaults to None (``images/`` beside each dataset CSV).
        out_dir: the output folder. Defaults to None (``train_output-YYYYMMDD-hhmmss``).
        experiment: MLflow experiment. Defaults to None (the table's file name without extension).
        tracking_uri: MLflow tracking URI. Defaults to None (MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).
        rows: a selection such as ``0,2-4``. Defaults to None (every row).
        resume: reuse the parent run of the same out-dir (or of the newest run of the same table) and skip rows
            whose run FINISHED. Defaults to False.
        skip_roc: do not draw ROC plots. Defaults to False.
        register: register the best row's model under this name, with alias ``champion``. Defaults to None.
        select_by: the metric that picks the best row for ``register`` (higher is better). Defaults to
            ``dev/balanced_accuracy``.
        gate: with ``register``, move ``champion`` to the best row only when each of these ``METRIC OP EXPR``
            holds against the current champion on the same test data (:mod:`timl.champion`). Defaults to ()
            (the alias moves).
        force_champion: with ``gate``, move ``champion`` even when a gate fails or the test data differ,
            recording who did and what failed. Defaults to False.
        executor: what trains the rows, one of :data:`EXECUTORS`: ``local`` (one after the other in this
            process) or ``ray`` (tasks on a Ray cluster). An executor handed to ``train_table`` overrides it.
            Defaults to ``local``.
        ray_address: with ``executor="ray"``, the cluster to join (``auto``, ``HOST:PORT``). Defaults to None
            (a Ray instance started on this machine).
        row_cpus: with ``executor="ray"``, CPUs per row (a ``cpus`` column overrides it). Defaults to 1.
        row_gpus: GPUs per row (a ``gpus`` column overrides it); 2 or more train a row on all of them.
            Defaults to 0.
        row_retries: with ``executor="ray"``, reruns of a row whose worker process or node died. Defaults to 2.
        checkpoint_dir: where rows checkpoint every epoch, as ``DIR/<table run id>/N``. Defaults to None
            (``out_dir/.backup/N``). On a cluster, a folder every node reaches lets a retried row continue.
        system_metrics: log MLflow's system metrics (CPU, memory, GPU, every 10 s) to each row's run. Defaults
            to True.
        bootstrap: resamples of the 95% bootstrap interval of every dev and test summary score (0: none).
            Defaults to 2000 (:data:`timl.intervals.DEFAULT_RESAMPLES`).

    Raises:
        ConfigError: an unknown executor, a resource count out of range, or a gate that does not parse.
    """

    img_dir: str | Path | None = None
    out_dir: str | Path | None = None
    experiment: str | None = None
    tracking_uri: str | None = None
    rows: str | None = None
    resume: bool = False
    skip_roc: bool = False
    register: str | None = None
    select_by: str = DEFAULT_SELECT_BY
    gate: tuple[str, ...] = ()
    force_champion: bool = False
    executor: str = "local"
    ray_address: str | None = None
    row_cpus: float = 1
    row_gpus: float = 0
    row_retries: int = 2
    checkpoint_dir: str | Path | None = None
    system_metrics: bool = True
    bootstrap: int = DEFAULT_RESAMPLES

    def __post_init__(self):
        for name in _OPTIONAL_FIELDS:
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        object.__setattr__(self, "gate", tuple(self.gate or ()))
        parse_gates(self.gate)  # a gate that does not parse stops the table before any row trains
        if str(self.bootstrap).isdigit():  # the MLproject passes its parameters as text
            object.__setattr__(self, "bootstrap", int(self.bootstrap))
        else:
            raise ConfigError(f"bootstrap is a number of resamples, 0 or more. Received: bootstrap={self.bootstrap!r}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"Unknown executor. Expected one of {', '.join(EXECUTORS)}. "
                              f"Received: executor={self.executor!r}")
        if not (self.row_cpus > 0 and self.row_gpus >= 0 and self.row_retries >= 0):
            raise ConfigError(f"Row resources out of range. Expected row_cpus > 0, row_gpus >= 0 and "
                              f"row_retries >= 0. Received: row_cpus={self.row_cpus!r}, "
                              f"row_gpus={self.row_gpus!r}, row_retries={self.row_retries!r}")

    @classmethod
    def with_keywords(cls, options: "TableOptions | None", keywords: dict) -> "TableOptions":
        """``options`` (default: the defaults) with the fields named in ``keywords`` replaced.

        Raises:
            TypeError: a keyword that is no field of TableOptions.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - fields)
        if unknown:
            raise TypeError(f"Unknown table option. Expected any of {', '.join(sorted(fields))}. "
                            f"Received: {', '.join(unknown)}")
        return dataclasses.replace(options or cls(), **keywords)

    def make_executor(self):
        """The executor these options ask for (its owner closes it, e.g. with ``with``).

        Raises:
            ConfigError: ``ray`` without Ray installed, or a Ray cluster that cannot be reached.
        """
        if self.executor == "ray":
            from timl.training.ray_executor import RayExecutor

            return RayExecutor(address=self.ray_address, row_cpus=self.row_cpus, row_gpus=self.row_gpus,
                               max_retries=self.row_retries)
        from timl.training.executors import LocalExecutor

        return LocalExecutor(skip_roc=self.skip_roc, gpus=self.row_gpus or None)
