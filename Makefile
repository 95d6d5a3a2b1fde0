# The two README commands (`make repro`, `make test`) and a few helpers.
# Only python3 must exist: the first target creates .venv and installs kdflow into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Stage commands in dvc.yaml say `python`; this PATH makes that the venv's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help repro test lint format install clean up down flow

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install kdflow with its dev tools

repro: $(STAMP)  ## run the whole pipeline (dvc repro) and print where the report is
	$(BIN)/dvc repro
	@echo
	@echo "Pipeline done. Metrics: metrics/   Models: models/   MLflow store: mlflow.db"
	@if [ -f reports/report.md ]; then echo "Report: $(CURDIR)/reports/report.md"; fi

# Local orchestration on 127.0.0.1: Prefect server + MLflow server + a worker on pool `gpu`,
# in the background; pid files, logs and the Prefect database under .kdflow/.
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
up: $(STAMP)  ## start Prefect, MLflow and a worker on 127.0.0.1 in the background
	@$(BIN)/python -m flows.services up --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

down:  ## stop what `make up` started
	@$(BIN)/python -m flows.services down

# The pipeline as a Prefect flow from this shell (stages in parallel scratch workspaces).
flow: $(STAMP)  ## run the pipeline as a Prefect flow (FLOW_ARGS=...)
	$(BIN)/python -m flows.pipeline $(FLOW_ARGS)

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(STAMP)  ## run the test suite (PYTEST_ARGS=...)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)  ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## ruff format and ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove .venv and the tool caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## (.*)/  make \1\t\2/' | expand -t 16
