"""``python -m timl.tune``: train a table whose rows may be searches (cells such as ``loguniform(1e-5,1e-2)``): each
search row's trials are sampled by Optuna and trained as rows (:mod:`timl.search`); the other rows train as with
``python -m timl.train``, whose options it takes too."""

from __future__ import annotations

import click

from timl.cli import command, user_errors
from timl.metric_names import DEFAULT_SELECT_BY
from timl.search.study import DIRECTIONS, PRUNERS, SAMPLERS
from timl.train import table_options, train_command

EXAMPLE = """\b
Examples:
  python -m timl.tune --input-table experiments/search.csv --trials 20 --out-dir search_output
  python -m timl.tune --input-table experiments/search.csv --trials 20 --out-dir search_output --resume
  python -m timl.tune --input-table search.csv --trials 40 --sampler random --pruner hyperband \\
      --study-storage postgresql+psycopg2://user@db-host/studies --register digits
"""


@command(epilog=EXAMPLE)
@table_options
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True,
              help="Trials per search row (with --resume: those still missing).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds after which a search starts no more trials (default: no limit).")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True,
              help="How trials are sampled (grid: every space a choice or an int).")
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True,
              help="What stops unpromising trials after an epoch (none: every trial trains all its epochs). Each epoch "
              "reports val_NAME for an objective dev/NAME when Keras logs it (val_loss for dev/loss), else a series "
              "going the objective's way: val_accuracy when maximizing (dev/balanced_accuracy), val_loss when "
              "minimizing; each trial run is tagged timl.pruning_series with it.")
@click.option("--objective", default=DEFAULT_SELECT_BY, show_default=True,
              help="The trial run's metric the search optimises.")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="maximize", show_default=True)
@click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials at once (with --executor ray).")
@click.option("--study-storage", help="The study's storage URL (default: sqlite:///OUT/study.db; a PostgreSQL URL "
              "for a team server).")
@click.option("-v", "--verbose", is_flag=True)
def cli(input_table, cuda_gpu, verbose, trials, timeout, sampler, pruner, objective, direction, parallel,
        study_storage, **options):
    """Search the rows of a TIML table whose cells hold search spaces; train the others."""
    from timl.search.study import SearchOptions

    with user_errors():
        search = SearchOptions(trials=trials, timeout=timeout, sampler=sampler, pruner=pruner, objective=objective,
                               direction=direction, parallel=parallel, study_storage=study_storage or None)
    train_command(input_table, cuda_gpu, verbose, options, search=search)


if __name__ == "__main__":
    cli()
