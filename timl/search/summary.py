"""A search's record on its run: what was searched and how (params, as it starts), then, as its last trial ends,
how its trials ended (``trials/finished``, ``trials/pruned``, ``trials/failed``; ``trials/repeated``: finished
trials that asked for a finished trial's cells again and were told its value), the best trial (its scores as
``best/...`` metrics, its run and its sampled cells as tags ``timl.best_run_id``, ``timl.best.<column>``, and
``best_trial.json``) and Optuna's plots (``search-<plot>.png``: optimization history, parameter importances,
slice, contour; a plot that cannot be drawn, with too few trials, is listed with why in ``search-plots.txt``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

from timl import metric_names as names
from timl import tracking
from timl.config import SearchRow
from timl.search import study as studies
from timl.search.study import SearchOptions

logger = logging.getLogger(__name__)

#: The tag prefix of the best trial's sampled cells on the search run (``timl.best.lr``).
BEST_CELL_TAG = "timl.best."

#: Optuna's matplotlib plots a search run gets: file stem -> function name in optuna.visualization.matplotlib.
PLOTS = {"history": "plot_optimization_history", "importances": "plot_param_importances", "slice": "plot_slice",
         "contour": "plot_contour"}


def search_params(row: SearchRow, options: SearchOptions, study_name: str, storage: str) -> dict:
    """A search run's params: the row's cells as written (its spaces' text), then how it is searched."""
    from sqlalchemy.engine import make_url

    try:  # a PostgreSQL URL's password stays out of the record
        shown = make_url(storage).render_as_string(hide_password=True)
    except Exception:
        shown = storage
    return {**{column: text for column, text in row.cells.items() if text}, "trials": options.trials,
            "sampler": options.sampler, "pruner": options.pruner, "objective": options.objective,
            "direction": options.direction, "study": study_name, "study_storage": shown}


def summarise(study, run_id: str, options: SearchOptions) -> tuple[str, str]:
    """Logs the search's record on its run; returns its status (FINISHED with a finished trial, else FAILED)
    and its message."""
    state = studies.states()
    trials = study.get_trials(deepcopy=False)
    counts = {"finished": sum(trial.state == state.COMPLETE for trial in trials),
              "pruned": sum(trial.state == state.PRUNED for trial in trials),
              "failed": sum(trial.state == state.FAIL and not trial.user_attrs.get(studies.INTERRUPTED)
                            for trial in trials),
              names.TRIALS_REPEATED: sum(studies.REPEATS in trial.user_attrs for trial in trials)}
    tracking.log_metrics({names.trials_metric(name): count for name, count in counts.items()}, run_id=run_id)
    counted = ", ".join(f"{count} {name}" for name, count in counts.items())
    if not counts["finished"]:
        return "FAILED", f"no trial finished ({counted})"
    best = study.best_trial
    best_run = tracking.get_run(best.user_attrs[studies.RUN_ID])
    tracking.log_metrics({names.best_metric(name): value for name, value in best_run.data.metrics.items()
                          if names.is_best_score(name)}, run_id=run_id)
    tracking.set_tags({tracking.TAG_BEST_RUN: best_run.info.run_id, tracking.TAG_BEST_ROW: best_run.info.run_name,
                       **{f"{BEST_CELL_TAG}{column}": str(value) for column, value in best.params.items()}},
                      run_id=run_id)
    with tempfile.TemporaryDirectory(prefix="timl-search-") as work:
        files = [_best_file(Path(work), best, best_run, options)] + draw_plots(study, Path(work))
        tracking.log_artifacts(files, run_id=run_id)
    return "FINISHED", (f"best trial {best.number} ({best_run.info.run_name}): {options.objective} "
                        f"{best.value:.3f}; trials {counted}")


def _best_file(folder: Path, best, best_run, options: SearchOptions) -> Path:
    path = folder / "best_trial.json"
    path.write_text(json.dumps({"trial": best.number, "run_id": best_run.info.run_id,
                                "run_name": best_run.info.run_name, "params": best.params,
                                "objective": options.objective, "value": best.value}, indent=2))
    return path


def draw_plots(study, folder: Path) -> list[Path]:
    """Optuna's plots of the study as PNGs in ``folder``, and ``search-plots.txt`` naming those that could not
    be drawn (too few trials, a single parameter for the contour) and why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    files, skipped = [], []
    fonts = logging.getLogger("matplotlib.font_manager")
    fonts_level = fonts.level  # Optuna's style asks for TeX fonts that matplotlib lacks here: without this, a
    fonts.setLevel(logging.ERROR)  # screen of "findfont" warnings per plot, each falling back to DejaVu Sans
    try:
        with matplotlib.rc_context():  # Optuna's plots switch the process's style (plt.style.use("ggplot")): the
            _draw_each(study, folder, files, skipped, plt, optuna_plots)  # reports drawn later keep TIML's own
    finally:
        fonts.setLevel(fonts_level)
    if skipped:
        (folder / "search-plots.txt").write_text("Plots not drawn:\n" + "\n".join(skipped) + "\n")
        files.append(folder / "search-plots.txt")
    return files


def _draw_each(study, folder: Path, files: list[Path], skipped: list[str], plt, optuna_plots) -> None:
    """Draws each of :data:`PLOTS` into ``folder``: its path into ``files``, or why not into ``skipped``."""
    for stem, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(optuna_plots, function)(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            path = folder / f"search-{stem}.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(figure)
            files.append(path)
        except Exception as error:  # too few trials, one parameter: the others are still drawn
            logger.info("search plot %s not drawn: %s", stem, error)
            skipped.append(f"{stem}: {type(error).__name__}: {error}")
        plt.close("all")
