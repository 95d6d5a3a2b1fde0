# The two README commands (`make repro`, `make test`) and a few helpers.
# Only python3 must exist: the first target creates .venv and installs kdflow into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Stage commands in dvc.yaml say `python`; this PATH makes that the venv's python.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: repro test lint format install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "Pipeline done. Metrics: metrics/   Models: models/   MLflow store: mlflow.db"
	@if [ -f reports/report.md ]; then echo "Report: $(CURDIR)/reports/report.md"; fi

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
