# TIML: two commands on a fresh machine with Python >= 3.11 and make.
#   make demo   creates .venv, installs the package (no dev extra), writes the digits demo data, trains
#               experiments/quickstart.csv and registers its best row as models:/digits@champion
#   make test   creates .venv if needed, installs the dev extra, runs the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
PACKAGE_STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The demo needs only the package; the dev extra (Ray, pytest, selenium, psycopg2) and tf-keras are for `make test`.
$(PACKAGE_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $(PACKAGE_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	# Keras 2 for the tests that write real Keras 2 files; --no-deps keeps tensorflow-cpu the only TensorFlow
	$(PY) -m pip install --quiet --no-deps "tf-keras==$$($(PY) -c 'import tensorflow as t; print(t.__version__.rsplit(".", 1)[0])').*"
	touch $(STAMP) $(PACKAGE_STAMP)

install: $(STAMP)

demo_data/digits.csv: | $(PACKAGE_STAMP)
	$(PY) -m timl.data digits demo_data

demo: $(PACKAGE_STAMP) demo_data/digits.csv
	$(PY) -m timl.train --input-table experiments/quickstart.csv --experiment quickstart --out-dir train_output-quickstart --register digits
	@echo
	@echo "Open the MLflow UI:  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db   (then http://127.0.0.1:5000)"

# Tests and benchmarks talk to loopback only: no MLflow usage telemetry
test: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(PY) -m pytest -q --timeout=900 --durations=40

bench: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(PY) bench/pipeline.py
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(PY) bench/train_overhead.py

clean:
	rm -rf train_output-* inspect_* mlruns mlartifacts mlflow.db demo_data .pytest_cache
