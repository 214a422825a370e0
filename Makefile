# kvd: `make run` starts a local cluster, `make test` runs the test suite.
# Both install what they need on a fresh Debian machine.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := zookeeper python3-venv

.PHONY: run test lint mutants deps bench clean

deps: $(VENV)/.installed /usr/share/java/zookeeper.jar

/usr/share/java/zookeeper.jar:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV) || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

run: deps
	$(PY) -m kvd.devcluster

test: lint
	$(PY) -m pytest

lint: deps
	$(PY) -m ruff check .
	$(PY) -m mypy

# Mutation check of the safety tests (tests/mutants.toml); slow, so not part of `test`.
mutants: deps
	$(PY) -m tests.mutants

bench: deps
	$(PY) bench/standalone.py

clean:
	rm -rf run kvd-data .hypothesis
