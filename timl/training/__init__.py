"""Training: a table's rows become MLflow runs. One concern per module:

- :mod:`timl.training.table`: the table loop (validation, row selection, resume, signals, results table);
- :mod:`timl.training.options`: the table-level options (:class:`TableOptions`), shared by the CLI and the MLproject;
- :mod:`timl.training.executors`: the seam the loop hands rows to (:class:`RowTask`: a row and its
  :class:`TableContext`), and the in-process :class:`LocalExecutor`;
- :mod:`timl.training.row`: one row, through its stages in order: ``plan`` (resolve), ``data``, ``loop`` or
  ``activations`` (fit), ``evaluate``, ``record`` (what a trained row writes and logs);
- :mod:`timl.training.callbacks`: the Keras callbacks (checkpoints, best weights, NaN loss, epoch logging).

Importing this package loads no TensorFlow.
"""

from timl.errors import TrainingError
from timl.training.executors import Executor, LocalExecutor, RowOutcome, RowTask, TableContext
from timl.training.options import TableOptions
from timl.training.row import train_row
from timl.training.table import TableOutcome, TableProgress, default_out_dir, train_table

__all__ = ["Executor", "LocalExecutor", "RowOutcome", "RowTask", "TableContext", "TableOptions", "TableOutcome",
           "TableProgress", "TrainingError", "default_out_dir", "train_row", "train_table"]
