"""Every MLflow call of TIML, one concern per module:

- :mod:`~timl.tracking.store`: the tracking URI, SQLite settings and schema lock, experiments, the store's errors;
- :mod:`~timl.tracking.runs`: table (parent) and row (child) runs, their states, closing dead runs, command runs;
- :mod:`~timl.tracking.logging`: one ``log_*`` family (params, metrics, tags, artifacts, datasets) whose
  ``run_id=None`` means the active run;
- :mod:`~timl.tracking.registry`: logged models' files, the model registry (versions, aliases, version tags and
  the files they name), a model card's facts;
- :mod:`~timl.tracking.tags`: the run tags TIML writes.

Nothing else calls MLflow directly, except :mod:`timl.pyfunc`, which defines the logged model itself. Callers use
the package (``from timl import tracking; tracking.RowRun(...)``); MLflow is imported inside the functions, so
importing the package stays light.
"""

from timl.tracking.logging import (active_run_id, dataset_input, download_artifact, download_artifacts,
                                   log_artifacts, log_datasets, log_folder, log_metrics, log_params, logged_steps,
                                   set_tags)
from timl.tracking.registry import (MODEL_ARTIFACTS, ModelFiles, alias_version, check_model_uri, download_model_files,
                                    model_card_facts, register_model, registry_overview, run_version, set_version_tags,
                                    update_version, version_files)
from timl.tracking.runs import (MEMORY_HINT, RowRun, child_runs, close_dead_runs, command_run, create_row_run,
                                end_run, error_text, fail_run, finished_children, get_run, git_commit, kill_run,
                                log_table_summary, process_tags, reopen_run, row_tags, runs_page, start_table_run,
                                table_run_name, table_runs)
from timl.tracking.store import (DEFAULT_TRACKING_URI, HTTP_RETRIES, check_store_exists, configure, experiment_id,
                                 experiment_name, http_settings, portable_uri, tracking_errors, tracking_uri)
from timl.tracking.tags import *  # noqa: F401,F403  (every TAG_* name and PARENT_MARKER)
