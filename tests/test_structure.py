"""The package's structure: no import cycle anywhere in ``timl/`` (lazy imports inside functions included), no
MLflow call outside the tracking package and the pyfunc (and none at import time inside the package), no explanation
method named outside the explainer registry, no metric name typed outside the metric vocabulary, one reader of user
tables, and light imports for the commands."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "timl"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict) -> set[str]:
    """The timl modules one import statement loads (``from pkg import submodule`` is the submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module if is_package else module.rsplit(".", 1)[0]
        if node.level:
            base = ".".join(base.split(".")[:len(base.split(".")) - node.level + 1])
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the timl modules it imports, at module level or inside functions."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module, path.name == "__init__.py", modules)
        # a module's own packages run before it anyway: importing them is no cycle
        graph[module] = {edge for edge in edges if edge != module and not module.startswith(edge + ".")}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle as a path a -> b -> ... -> a (one per strongly connected group, by depth-first search)."""
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"timl.a": {"timl.b"}, "timl.b": {"timl.c"}, "timl.c": {"timl.a"}, "timl.d": {"timl.a"}}
    assert find_cycles(graph) == [["timl.a", "timl.b", "timl.c", "timl.a"]]
    assert find_cycles({"timl.a": {"timl.b"}, "timl.b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "timl.tracking" in graph["timl.register"]  # imported inside register_run only
    assert "timl.training.record" in graph["timl.training.row"]


def _in_tracking(module: str) -> bool:
    """Whether a module is the tracking package or one of its modules (store, runs, logging, registry, tags)."""
    return module == "timl.tracking" or module.startswith("timl.tracking.")


def _imported_names(node: ast.AST) -> list[str]:
    """The module names an import statement names (``import a.b`` -> a.b, ``from a.b import c`` -> a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""] if isinstance(node, ast.ImportFrom) else []


def test_mlflow_is_called_from_tracking_and_the_pyfunc_only():
    callers = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = _imported_names(node)
            if any(name == "mlflow" or name.startswith("mlflow.") for name in names):
                if not _in_tracking(module) and module != "timl.pyfunc":
                    callers.append(module)
    assert not callers, f"MLflow imported outside the timl.tracking package and timl.pyfunc: {sorted(set(callers))}"


#: The converters and runtime of the exports (issue 28), and the modules that alone import them.
EXPORT_LIBRARIES, EXPORT_MODULES = ("onnx", "onnxruntime", "tf2onnx"), {"timl.exporting", "timl.onnx_runtime"}


def test_onnx_and_its_converter_are_imported_by_the_export_modules_only():
    """ONNX, ONNX Runtime and tf2onnx (the optional extra ``export``) are imported in timl.exporting and
    timl.onnx_runtime alone, inside functions, so every other module works without them."""
    offenders = [f"{module}: {name}" for module, path in _modules().items()
                 for node in ast.walk(ast.parse(path.read_text())) for name in _imported_names(node)
                 if name.split(".")[0] in EXPORT_LIBRARIES and module not in EXPORT_MODULES]
    eager = [f"{module}: {name}" for module in EXPORT_MODULES for node in ast.parse(_modules()[module].read_text()).body
             for name in _imported_names(node) if name.split(".")[0] in EXPORT_LIBRARIES]
    assert not offenders and not eager, (offenders, eager)


def test_the_tracking_package_imports_mlflow_inside_functions_only():
    eager = [f"{module}: {name}" for module, path in _modules().items() if _in_tracking(module)
             for node in ast.parse(path.read_text()).body for name in _imported_names(node)
             if name == "mlflow" or name.startswith("mlflow.")]
    assert not eager, f"MLflow imported at module level in timl.tracking (import it inside the function): {eager}"
    code = "import sys\nimport timl.tracking\nprint(sorted(name for name in sys.modules if name.startswith('mlflow')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_callers_reach_tracking_through_the_package():
    """Outside the package, ``from timl import tracking`` (its ``__init__`` re-exports every public name), never
    one of its modules, so a name can move between store, runs, logging and registry without touching callers."""
    graph = import_graph()
    offenders = [f"{module} -> {target}" for module, targets in graph.items() if not _in_tracking(module)
                 for target in targets if target.startswith("timl.tracking.")]
    assert not offenders, f"import timl.tracking, not its modules: {offenders}"


def test_explanation_methods_are_named_in_the_registry_only():
    from timl.xai import list_explainers

    registry = PACKAGE / "xai" / "explainers.py"
    offenders = []
    for path in list(PACKAGE.rglob("*.py")) + list((PACKAGE / "serving" / "static").glob("*.*")):
        if path == registry:
            continue
        text = path.read_text()
        for name in list_explainers():
            for quoted in (f'"{name}"', f"'{name}'"):
                if quoted in text:
                    offenders.append(f"{path.relative_to(REPO)}: {quoted}")
    assert not offenders, offenders


def test_commands_and_libraries_import_no_tensorflow():
    code = ("import sys\nimport timl.cli, timl.config, timl.training, timl.classifier, timl.pyfunc, timl.xai, "
            "timl.predict, timl.inspect, timl.explain, timl.register, timl.results, timl.serving.app, timl.export, "
            "timl.tune\n"
            "print(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"



#: Calls that read a user's table: only :mod:`timl.tables` makes them, so every table reads alike.
TABLE_READING_CALLS = {"read_csv", "read_excel", "read_table", "read_fwf", "ExcelFile", "load_workbook", "reader",
                       "DictReader"}


def table_reading_calls(source: str) -> list[tuple[int, str]]:
    """(line, name) of each call of pandas' read_csv/read_excel/read_table, openpyxl's load_workbook or csv.reader
    in a module's source (``config.read_table``, a TIML function, is not such a call)."""
    readers = {"pd", "pandas", "openpyxl", "csv"}
    tree = ast.parse(source)
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").split(".")[0] in readers for alias in node.names}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
            called = function.attr if function.value.id in readers else None
        else:
            called = function.id if isinstance(function, ast.Name) and function.id in imported else None
        if called in TABLE_READING_CALLS:
            calls.append((node.lineno, called))
    return calls


def test_user_tables_are_read_by_the_one_reader_only():
    offenders = [f"{path.relative_to(REPO)}:{line}: {name}" for module, path in _modules().items()
                 if module != "timl.tables" for line, name in table_reading_calls(path.read_text())]
    assert not offenders, f"tables read outside timl/tables.py (use timl.tables.read_cells): {offenders}"


def test_the_table_reader_check_sees_every_way_of_reading():
    source = ("import csv\nimport pandas as pd\nfrom openpyxl import load_workbook\nfrom timl import config\n"
              "pd.read_csv('t.csv', sep=';')\npd.read_excel('t.xlsx')\nload_workbook('t.xlsx')\n"
              "csv.reader(open('t.csv'))\nconfig.read_table('t.csv')\n")
    assert table_reading_calls(source) == [(5, "read_csv"), (6, "read_excel"), (7, "load_workbook"), (8, "reader")]


#: The separators of the ``dataset`` cell: ``;`` between the files of a list split, ``+`` between union members.
DATASET_CELL_SEPARATORS = {";", "+", "UNION_SEPARATOR", "LIST_SEPARATOR"}


def dataset_cell_splits(source: str) -> list[int]:
    """Lines that split a string on ``+`` (or its constants), or split anything named ``dataset`` on ``;``:
    the ``dataset`` cell is parsed by :class:`timl.datasets.DatasetCell` alone (``classcolumns`` is split on ``;``
    elsewhere)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "split"
                and node.args):
            continue
        argument = node.args[0]
        separator = (argument.value if isinstance(argument, ast.Constant) else
                     argument.id if isinstance(argument, ast.Name) else None)
        if separator not in DATASET_CELL_SEPARATORS:
            continue
        if separator != ";" or "dataset" in ast.unparse(node.func.value).lower():
            lines.append(node.lineno)
    return sorted(lines)


def test_the_dataset_cell_is_parsed_in_one_place():
    offenders = [f"{path.relative_to(REPO)}:{line}" for module, path in _modules().items()
                 if module != "timl.datasets.cell" for line in dataset_cell_splits(path.read_text())]
    assert not offenders, f"the dataset cell split outside timl/datasets/cell.py (use DatasetCell): {offenders}"


def test_the_dataset_cell_check_sees_every_split():
    source = ("a = row.dataset.split(';')[0]\nb = entry.split('+')\nc = text.split(UNION_SEPARATOR)\n"
              "d = row.classcolumns.split(';')\ne = config.dataset.text.split(LIST_SEPARATOR)\n")
    assert dataset_cell_splits(source) == [1, 2, 3, 5]


#: The stages of a row, in the order its data flows through them (``row`` calls them in turn).
ROW_STAGES = ("timl.training.plan", "timl.training.data", "timl.training.loop", "timl.training.activations",
              "timl.training.calibrate", "timl.training.evaluate", "timl.training.record", "timl.training.row")


def test_a_row_passes_each_stage_once():
    """A stage imports only the stages before it: a row's data never flows back to a stage it left."""
    graph = import_graph()
    backwards = [f"{stage} -> {target}" for position, stage in enumerate(ROW_STAGES)
                 for target in graph[stage] if target in ROW_STAGES[position + 1:]]
    assert not backwards, f"a row's stage imports a later stage: {backwards}"
    assert {"timl.training.plan", "timl.training.data", "timl.training.loop", "timl.training.calibrate",
            "timl.training.evaluate", "timl.training.record"} <= graph["timl.training.row"]


#: The one module that types metric names; every other module of ``timl/`` imports them from it.
METRIC_VOCABULARY = "timl.metric_names"


def _metric_name_patterns() -> tuple[re.Pattern, frozenset[str]]:
    """What a metric-name literal looks like, from the vocabulary itself: a text that starts with a group
    (``dev/``, ``test/``, ``train/``, ``rows/``, ``best/``, ``inspect_<dataset>/``), holds a per-class group
    (``dev_class/``, ``{split}_class/``) or starts with Keras' dev prefix (``val_loss``); and the exact names the
    vocabulary maps (results columns showing a metric such as ``valacc`` or ``trainsize``, earlier names such as
    ``train_time``, ``--select-by`` aliases)."""
    from timl import metric_names as names

    groups = [names.summary_group(split) for split in (names.TRAIN, names.DEV, names.TEST)]
    groups += [names.ROWS_GROUP, names.BEST_GROUP, names.CALIBRATION_GROUP]
    pattern = re.compile("^(?:" + "|".join(map(re.escape, groups)) + r")|_class/|^inspect_[^/]*/|^"
                         + re.escape(names.KERAS_DEV_PREFIX))
    exact = frozenset([*names.ORIGINAL_METRIC_COLUMNS, *names.ORIGINAL_CLASS_COLUMNS, *names.SUMMARY_COLUMNS,
                       *names.CALIBRATION_SUMMARY_COLUMNS,
                       *names.LEGACY_METRICS.values(), *names.SELECT_BY_ALIASES])
    return pattern, exact


def metric_name_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal in a module's source that names a metric (:func:`_metric_name_patterns`).

    Scope: every string constant of the code, f-strings read as one text with ``{}`` for each replacement
    field (``f"best/{name}"`` is ``best/{}``). Documentation is out of scope: a string that stands alone as a
    statement (module, class and function docstrings) and comments may mention any name.
    """
    pattern, exact = _metric_name_patterns()
    tree = ast.parse(source)
    skipped = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
               and isinstance(node.value, ast.Constant)}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skipped |= {id(part) for part in node.values}
            texts.append((node, "".join(part.value if isinstance(part, ast.Constant) else "{}"
                                        for part in node.values)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts.append((node, node.value))
    return sorted((node.lineno, text) for node, text in texts
                  if id(node) not in skipped and (pattern.search(text) or text in exact))


def test_metric_names_are_typed_in_the_vocabulary_only():
    offenders = [f"{path.relative_to(REPO)}:{line}: {text!r}" for module, path in _modules().items()
                 if module != METRIC_VOCABULARY for line, text in metric_name_literals(path.read_text())]
    assert not offenders, f"metric names typed outside timl/metric_names.py (import them from it): {offenders}"


def test_the_metric_name_check_sees_every_way_of_typing_one():
    source = ('"""Logs dev/accuracy and valacc."""\n'
              'def f(split, name, status):\n'
              '    """Returns val_accuracy."""\n'
              '    return ["dev/balanced_accuracy", f"{split}_class/", f"best/{name}", "val_loss", "valacc",\n'
              '            "test_balanced_accuracy", f"inspect_{name}/", "accuracy", f"inspect_{name}-{split}",\n'
              '            "tests/data", "validation", f"{name}/samples", "train"]\n')
    assert metric_name_literals(source) == [(4, "best/{}"), (4, "dev/balanced_accuracy"), (4, "val_loss"),
                                            (4, "valacc"), (4, "{}_class/"), (5, "inspect_{}/"),
                                            (5, "test_balanced_accuracy")]


def _imports_of(path: Path) -> list[str]:
    """Every module name an import statement of ``path`` names, at module level or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
    return names


def test_only_serving_imports_flask():
    web = ("flask", "werkzeug")
    offenders = sorted(module for module, path in _modules().items() if not module.startswith("timl.serving")
                       and any(name.split(".")[0] in web for name in _imports_of(path)))
    assert not offenders, f"Flask or Werkzeug imported outside timl/serving/: {offenders}"


def test_only_the_search_package_imports_optuna():
    """Optuna is the search's engine (issue 27): its study, sampler, pruner and plots stay in timl/search/, and
    reading a table or training a row imports it only for a trial of a search."""
    offenders = sorted(module for module, path in _modules().items() if not module.startswith("timl.search")
                       and any(name.split(".")[0] == "optuna" for name in _imports_of(path)))
    assert not offenders, f"Optuna imported outside timl/search/: {offenders}"
    code = "import sys\nimport timl.config, timl.training, timl.tune\nprint('optuna' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


def test_dicom_is_read_by_the_one_dicom_module_only():
    """pydicom (issue 28) is imported by timl/images/dicom.py alone, inside its functions: every entry point reads
    DICOM through decode_image, and importing the package loads no pydicom."""
    offenders = sorted(module for module, path in _modules().items() if module != "timl.images.dicom"
                       and any(name.split(".")[0] == "pydicom" for name in _imports_of(path)))
    assert not offenders, f"pydicom imported outside timl/images/dicom.py: {offenders}"
    tree = ast.parse((PACKAGE / "images" / "dicom.py").read_text())
    top = [node.lineno for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
           and any((getattr(node, "module", None) or alias.name).split(".")[0] == "pydicom" for alias in node.names)]
    assert not top, f"timl/images/dicom.py imports pydicom at module level (lines {top}): import it inside functions"


def test_the_review_store_and_the_export_command_reach_no_web_layer():
    """The review store is a library of its own: the export command reads answers with no Flask imported."""
    graph = import_graph()
    for start in ("timl.review_store", "timl.review"):
        reached, waiting = set(), [start]
        while waiting:
            module = waiting.pop()
            if module not in reached:
                reached.add(module)
                waiting += graph.get(module, ())
        web = sorted(module for module in reached if module.startswith("timl.serving"))
        web += [name for name in _imports_of(_modules()[start]) if name.split(".")[0] in ("flask", "werkzeug")]
        assert not web, f"{start} imports the web layer: {web}"


#: Command modules beyond timl.cli.COMMANDS (the register command, the server on Flask's development server).
EXTRA_COMMAND_MODULES = ("timl.register", "timl.networking.__main__")

#: Options every command shares, declared once in timl/cli.py.
SHARED_OPTIONS = ('"--tracking-uri"', '"--cuda-gpu"', '"--bootstrap"')


def test_every_command_speaks_the_one_cli_vocabulary():
    """Commands are declared with timl.cli's command()/group() (``-h`` and ``--help``, the example as epilog) and
    take the shared options from timl.cli, so a flag is spelled, defaulted and explained in one place."""
    import importlib

    from timl.cli import COMMANDS, CONTEXT_SETTINGS

    offenders = [f"{path.relative_to(REPO)}: {text}" for module, path in _modules().items() if module != "timl.cli"
                 for text in ("context_settings=", "@click.command(", "@click.group(", *SHARED_OPTIONS)
                 if text in path.read_text()]
    assert not offenders, f"declare commands and shared options through timl.cli: {offenders}"
    for module in (*COMMANDS.values(), *EXTRA_COMMAND_MODULES):
        command = importlib.import_module(module).cli
        assert command.context_settings == CONTEXT_SETTINGS and command.epilog, module


#: The most lines a module of timl/ may have: a module over it answers more than one question.
MAX_MODULE_LINES = 460


def test_no_module_answers_several_questions():
    """Modules stay small enough to answer one question each (issue 22: about 450 lines at most)."""
    long = {f"{path.relative_to(REPO)}": lines for path in PACKAGE.rglob("*.py")
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines; split them by concern: {long}"


def group_cell_splits(source: str) -> list[int]:
    """Lines that split or partition a string on ``:`` when the string is named after groups: the ``groups`` cell
    (``COLUMN`` or ``FILE.csv:COLUMN``) is parsed by :func:`timl.datasets.parse_groups` alone."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("split", "rsplit", "partition", "rpartition") and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == ":"
                and "group" in ast.unparse(node.func.value).lower()):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_groups_cell_is_parsed_in_one_place():
    assert group_cell_splits("groups.split(':')\nhost.split(':')\n") == [1], "the rule sees what it looks for"
    offenders = [f"{path.relative_to(REPO)}:{line}" for module, path in _modules().items()
                 if module != "timl.datasets.groups" for line in group_cell_splits(path.read_text())]
    assert not offenders, f"the groups cell split outside timl/datasets/groups.py (use parse_groups): {offenders}"


def test_bootstrap_resampling_lives_in_timl_intervals_alone():
    """One resampler for every interval (rows, inspect, cross-validation): ``timl.intervals`` draws the resamples
    with a seeded numpy Generator and scores them with array operations, importing no scikit-learn (a
    per-resample loop) and nothing of TIML but the metric vocabulary; no other module draws a resample."""
    path = PACKAGE / "intervals.py"
    imports = [name for name in _imports_of(path) if name.startswith(("timl", "sklearn"))]
    assert imports == ["timl.metric_names"], imports
    offenders = [module for module, other in _modules().items() if module != "timl.intervals"
                 and "resample_counts(" in other.read_text() and "from timl.intervals" not in other.read_text()]
    assert not offenders, offenders


def test_subgroups_are_scored_by_the_evaluation_and_parsed_in_one_place():
    """A group's scores are :func:`timl.evaluation.evaluate`'s on its images (its intervals those of
    :mod:`timl.intervals`): the subgroups package computes no score of its own, and only its spec module splits
    the ``--subgroups`` text."""
    package = PACKAGE / "subgroups"
    imports = {name for path in package.glob("*.py") for name in _imports_of(path)}
    assert not {name for name in imports if name.startswith(("sklearn", "scipy"))}, imports
    assert "evaluation.evaluate(" in (package / "scores.py").read_text()
    offenders = [module for module, path in _modules().items() if module != "timl.subgroups.spec"
                 and "parse_subgroups(" in path.read_text() and "def parse_subgroups" in path.read_text()]
    assert not offenders, offenders


def test_the_registry_is_written_by_the_register_command_alone():
    """One place decides what a registered version and its aliases say (the gates, the override, the card):
    ``timl.register``. Every other module (training's ``--register`` included) goes through it, never through
    ``tracking.register_model`` or ``tracking.set_version_tags``; the gates and the card read the record only
    (``timl.champion`` and ``timl.model_card`` import no MLflow, no TensorFlow and no training code)."""
    writers = ("register_model(", "set_version_tags(", "set_registered_model_alias(")
    offenders = [module for module, path in _modules().items()
                 if module != "timl.register" and not _in_tracking(module)
                 and any(call in path.read_text() for call in writers)]
    assert not offenders, f"the registry written outside timl/register.py: {offenders}"
    for module in ("champion", "model_card"):
        imports = [name for name in _imports_of(PACKAGE / f"{module}.py") if name.startswith(("timl", "mlflow",
                                                                                                "tensorflow", "keras"))]
        assert set(imports) <= {"timl", "timl.metric_names", "timl.errors", "timl.tracking"}, (module, imports)


def tta_literals(source: str) -> list[int]:
    """The lines of string constants that name a test-time augmentation preset or a spread column."""
    from timl.tta import TTA_PRESETS, TTA_STD_PREFIX

    return sorted(node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)
                  and isinstance(node.value, str) and (node.value in TTA_PRESETS
                                                       or node.value.startswith(TTA_STD_PREFIX)))


def test_test_time_augmentation_lives_in_timl_tta_alone():
    """One registry of test-time views for predict, the pyfunc, the server and the table column: no other module
    names a preset or a ``tta_std_`` column (``timl/images/augment.py`` names its own ``imgaug`` presets), and the
    views are computed from the ``imgaug`` presets' own index table, with no TensorFlow."""
    assert tta_literals('x = "hflip_rot4"\ny = f"tta_std_{name}"\nz = "tta_std_A"\n') == [1, 2, 3], "the rule sees"
    offenders = [f"{path.relative_to(REPO)}:{line}" for module, path in _modules().items()
                 if module not in ("timl.tta", "timl.images.augment") for line in tta_literals(path.read_text())]
    assert not offenders, f"a test-time augmentation name outside timl/tta.py (use timl.tta): {offenders}"
    imports = [name for name in _imports_of(PACKAGE / "tta.py") if name.startswith(("timl", "tensorflow", "keras"))]
    assert imports == ["timl.errors", "timl.images.augment"], imports


def carriage_return_writes(source: str) -> list[int]:
    """The lines of ``source`` that write a carriage return to a stream (a progress frame)."""
    import re

    return [number for number, line in enumerate(source.splitlines(), start=1)
            if re.search(r"""\.write\(\s*f?["']\\r""", line)]


def test_progress_frames_are_written_by_the_one_progress_writer():
    """Progress is written by ``timl.cli.write_progress`` alone, so a file or pipe gets a line per update, never
    carriage-return frames (issue 25)."""
    assert carriage_return_writes('sys.stderr.write(f"\\rpredicted {n}")\nstream.write("\\rx")\n') == [1, 2]
    offenders = [f"{path.relative_to(REPO)}:{line}" for module, path in _modules().items()
                 if module != "timl.cli" for line in carriage_return_writes(path.read_text())]
    assert not offenders, f"a progress frame written outside timl.cli.write_progress: {offenders}"


#: The modules that may create a tracking store (they write runs or versions); every other caller of
#: ``tracking.configure`` only reads and passes ``create=False`` (issue 25: no empty mlflow.db from a read).
STORE_WRITERS = {"timl.train", "timl.training.table", "timl.training.ray_executor", "timl.register", "timl.review"}


def test_commands_that_only_read_create_no_store():
    offenders = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "configure"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "tracking"
                    and module not in STORE_WRITERS
                    and not any(keyword.arg == "create" and isinstance(keyword.value, ast.Constant)
                                and keyword.value.value is False for keyword in node.keywords)):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"a read-only caller of tracking.configure may create mlflow.db (pass create=False): {offenders}"

def test_a_run_owner_is_more_than_a_pid():
    """A run left RUNNING belongs to a process named by pid, host and start time (``timl.tracking.runs``): no module
    decides that a run's process lives by its pid alone (``pid_exists``: a reused pid is another process), and only
    ``timl.training.lock`` locks a table's output folder."""
    offenders = [module for module, path in _modules().items() if "pid_exists(" in path.read_text()]
    assert not offenders, f"a process identified by its pid alone: {offenders}"
    lockers = [module for module, path in _modules().items() if ".timl.lock" in path.read_text()]
    assert lockers == ["timl.training.lock"], lockers


def test_prometheus_is_imported_by_the_server_metrics_alone_and_inside_functions():
    """The server's metrics have one home, ``timl.serving.metrics``, which imports ``prometheus_client`` only inside
    functions: the library picks its multiprocess mode when first imported, so nothing may import it before
    ``timl.serve`` has set PROMETHEUS_MULTIPROC_DIR (gunicorn's workers would each count alone)."""
    offenders = [module for module, path in _modules().items() if module != "timl.serving.metrics"
                 and any(name.startswith("prometheus_client") for name in _imports_of(path))]
    assert not offenders, f"prometheus_client imported outside timl/serving/metrics.py: {offenders}"
    tree = ast.parse((PACKAGE / "serving" / "metrics.py").read_text())
    top_level = [name for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for name in _imported_names(node)]
    assert not [name for name in top_level if name.startswith("prometheus_client")], top_level


def test_the_image_pipeline_makes_no_tensor_of_the_cached_pixels():
    """``make_dataset`` reads batches from the numpy array of cached pixels (issue 27): a tensor of the whole set
    would be a second copy of it in memory (and tf.data's graph rewrite serialises captured tensors: a third)."""
    copying = {"convert_to_tensor", "constant", "from_tensor_slices", "from_tensors", "Variable"}
    tree = ast.parse((PACKAGE / "images" / "pipeline.py").read_text())
    offenders = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and getattr(node.func, "attr", getattr(node.func, "id", None)) in copying
                 and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "images"]
    assert not offenders, f"timl/images/pipeline.py makes a tensor of the images at lines {offenders}"
