# The README's commands. `make demo` scores sample_inputs/ with the shipped model; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT ?= out/scores

.PHONY: venv dataset demo report-example test test-slow test-clock test-all test-cluster cluster-up cluster-down bench \
	train-default evaluate clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,figures]'
	touch $@

# The real Fashion-MNIST comes from Debian's package; nothing is downloaded at run time.
dataset:
	@[ -f $(DATA_DIR)/t10k-images-idx3-ubyte.gz ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }

demo: venv
	$(PY) -m pipeline.score --input sample_inputs/images --output $(OUT)

# The README's report screenshot: sample_inputs/ scored after 14 made-up earlier nights, rendered by Chromium.
REPORT_OUT ?= /tmp/fashion-report-example
report-example: venv
	rm -rf $(REPORT_OUT)
	$(PY) sample_inputs/history.py $(REPORT_OUT) --nights 14 --until 2026-11-21
	$(PY) -m pipeline.score --input sample_inputs/images --output $(REPORT_OUT) --run_date 2026-11-22
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2300 \
		--screenshot=$(CURDIR)/docs/report.png file://$(REPORT_OUT)/dt=2026-11-22/report.html

test: venv dataset
	$(PY) -m pytest -q

test-slow: venv dataset
	$(PY) -m pytest -q -m slow

# The tests marked `clock` (dates, clocks, time zones, generated files) again with the clock moved: they start at
# 23:58 local time on 2028-02-28 in Newfoundland (UTC-3:30), so the local date is not UTC's and turns to a leap day
# while they run. Debian's faketime moves the wall clock of every process they start (file times included); the
# monotonic clock stays true, and tests/clock/sitecustomize.py lets Python's sleeps through libfaketime.
CLOCK_ZONE ?= America/St_Johns
CLOCK_START ?= 2028-02-28 23:58:00
test-clock: venv dataset
	@command -v faketime >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq faketime; }
	offset=$$(( $$(TZ=$(CLOCK_ZONE) date -d '$(CLOCK_START)' +%s) - $$(date +%s) )); \
	moved="TZ=$(CLOCK_ZONE) FAKETIME_DONT_FAKE_MONOTONIC=1 PYTHONPATH=$(CURDIR)/tests/clock"; \
	env $$moved faketime -f "$$( [ $$offset -ge 0 ] && echo +)$$offset" date '+the tests see %F %T %Z'; \
	env $$moved faketime -f "$$( [ $$offset -ge 0 ] && echo +)$$offset" $(PY) -m pytest -q -m "clock and not slow"

test-all: venv dataset
	$(PY) -m pytest -q -m "not cluster"

# The scorer on a Spark and a Flink cluster on 127.0.0.1 (docs/cluster.md): Beam's job server from Maven, the engines
# from PyPI, all cached in ~/.cache/fashion-scorer/cluster (FASHION_CLUSTER_CACHE). Needs Java 17, Maven and cc.
test-cluster: venv dataset
	$(PY) -m pytest -q -m cluster

# A cluster to submit to by hand: `make cluster-up ENGINE=flink`; it prints its web UI and the flags to score on it.
ENGINE ?= spark
CLUSTER_STATE ?= .cluster
cluster-up: venv
	$(PY) deploy/cluster/cluster.py up $(ENGINE) --state $(CLUSTER_STATE)

cluster-down:
	$(PY) deploy/cluster/cluster.py down --state $(CLUSTER_STATE)

bench: venv dataset
	$(PY) bench/benchmark.py

# Reproduces the shipped default model (about 41 minutes on 2 cores). A second run elsewhere, to compare with it:
#   make train-default TRAIN_RUN=runs/reproduce TRAIN_EXPORT=runs/reproduce/model.keras
TRAIN_RUN ?= runs/default-cnn3-wide
TRAIN_EXPORT ?= model/artifacts/fashion_cnn.keras
train-default: venv dataset
	$(PY) -m model.train --architecture cnn3-wide --augment shift-flip-erase --dropout-rate 0.1 --calibrate \
		--epochs 76 --validation-split 0.05 --batch-size 128 --seed 42 \
		--run-dir $(TRAIN_RUN) --export $(TRAIN_EXPORT) --verbose 2

evaluate: venv dataset
	$(PY) -m model.evaluate --output-dir reports --history $(TRAIN_RUN)/state.json

clean:
	rm -rf $(VENV) runs reports out .pytest_cache .cluster
