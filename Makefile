# Two entry points for a fresh machine (Python >= 3.11, g++, make, perl):
#   make demo   - set up, then run the main job on the default model
#   make test   - set up, then run the fast suite (tox -e py)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint nightly bench setup clean

$(BIN)/hardwire: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' 'tox>=4.20'
	@touch $@

setup: $(BIN)/hardwire

demo: setup
	$(BIN)/hardwire demo

test: setup
	$(BIN)/tox -e py

lint: setup
	$(BIN)/tox -e lint

nightly: setup
	$(BIN)/tox -e nightly

bench: setup
	$(BIN)/tox -e bench

clean:
	rm -rf $(VENV) .tox build *.egg-info
