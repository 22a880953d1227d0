"""The names TIML writes into the MLflow record beside metrics and params: run tags and the parent-run marker.

A table is a parent run (tag ``timl.kind`` = ``table``); each row is a child run (``timl.kind`` = ``row``) carrying
its row number and a stable row key, so that ``--resume`` finds it again. A cross-validation row (split ``kfold=K``)
is a child run of kind ``cv`` whose K folds are its own child runs (kind ``row``, tag ``timl.fold`` = i).
"""

TAG_ROW_KEY = "timl.row_key"
TAG_ROW = "timl.row"
TAG_TABLE = "timl.table"
TAG_KIND = "timl.kind"
#: The kinds of TIML runs (tag ``timl.kind``): a table, a row (a fold of a cross-validation too), a cross-validation.
KIND_TABLE, KIND_ROW, KIND_CV = "table", "row", "cv"
#: A search (``python -m timl.tune``): its run's kind, its trials' number and search run name, a pruned trial's
#: epoch and reason, the per-epoch series a trial reports to its pruner.
KIND_SEARCH = "search"
TAG_TRIAL, TAG_SEARCH, TAG_PRUNED = "timl.trial", "timl.search", "timl.pruned"
TAG_PRUNING_SERIES = "timl.pruning_series"
#: A fold of a cross-validation: its index i (of ``kfold=K:i``).
TAG_FOLD = "timl.fold"
TAG_PID = "timl.pid"
TAG_HOST = "timl.host"
#: When the process of ``timl.pid`` started (seconds since the epoch, psutil's create_time): a pid reused by
#: another process later does not keep a dead run RUNNING.
TAG_PROCESS_START = "timl.process_start"
TAG_STATUS = "timl.status"
TAG_EXCEPTION = "timl.exception"
TAG_OUT_DIR = "timl.out_dir"
TAG_TRAINSTART = "timl.trainstart"
TAG_TRAINMODEL = "timl.trainmodel"
TAG_MODEL_SHA256 = "timl.model_sha256"
TAG_RESUMED_AT = "timl.resumed_at_epoch"
TAG_COMMAND = "timl.command"
TAG_MODEL_RUN = "timl.model_run_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_WORKER = "timl.worker"
TAG_BEST_RUN = "timl.best_run_id"
TAG_BEST_ROW = "timl.best_row"
TAG_NODE = "timl.ray_node"
#: An export of expert answers (``timl.review export``): the model(s) reviewed, the reviewers, the images folder.
TAG_REVIEW_MODEL = "timl.review.model"
TAG_REVIEW_REVIEWERS = "timl.review.reviewers"
TAG_REVIEW_IMAGES = "timl.review.images"
#: A row's split whose CSV was exported from expert answers (``{split}``: train, dev, test): the export's run, its
#: CSV artifact and the reviewers.
TAG_DATASET_SOURCE_RUN = "timl.dataset.{split}.source_run"
TAG_DATASET_SOURCE = "timl.dataset.{split}.source"
TAG_DATASET_REVIEWERS = "timl.dataset.{split}.reviewers"
#: A row whose split keeps groups of images whole (its ``groups`` cell): the value is the cell.
TAG_SPLIT_GROUPED = "timl.split.grouped"
#: An inspection whose test images share groups with the model's training images: how many test images do.
TAG_INSPECT_SHARED_GROUPS = "timl.inspect.shared_groups"
#: The file in a table's output folder that names the table's (parent) run.
PARENT_MARKER = "parent_run_id.txt"
#: A registered version whose alias was moved by ``--gate``: each gate with both values; one moved despite failed gates
#: or different test data (``--force``): who forced it and what failed.
TAG_CHAMPION_GATES = "timl.champion.gates"
TAG_CHAMPION_OVERRIDE = "timl.champion.override"
#: A registered version's model card: the artifact folder of the version's run holding model_card.json and .md.
TAG_MODEL_CARD = "timl.model_card"
