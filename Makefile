# The two commands of the README: `make demo` and `make test`. Each installs what it
# needs the first time (a virtual environment in .venv, the Kafka jars in
# deploy/kafka/lib) and skips that quickly afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
JARS      := deploy/kafka/lib/.copied

.PHONY: demo test lint install kafka-jars broker clean

demo: install kafka-jars
	$(VENV)/bin/fraud demo

test: install kafka-jars
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check fraud workers tests
	$(VENV)/bin/ruff format --check fraud workers tests

install: $(INSTALLED)
kafka-jars: $(JARS)

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(JARS): deploy/kafka/pom.xml
	rm -rf deploy/kafka/lib
	mvn --quiet --batch-mode -f deploy/kafka/pom.xml dependency:copy-dependencies
	touch $@

# A broker in the foreground for manual work: prints KAFKA_BOOTSTRAP_SERVERS=...
broker: install kafka-jars
	$(PY) -m workers.broker

clean:
	rm -rf $(VENV) deploy/kafka/lib .cache .pytest_cache
