# Every target bootstraps .venv on first use, so a fresh clone needs nothing but python3.
# Cluster targets (images, kind-*, submit, e2e) also need docker and kind.
include versions.env
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DEMO_OUTPUT ?= demo-output
PORT        ?= 8080
MODEL       ?= $(DEMO_OUTPUT)/registry/churn@champion

.PHONY: help venv demo test lint compile serve clean system-deps bench-serving bench-drift lock \
	images kind-up kind-load submit e2e kind-down

help:
	@echo "make demo     train, evaluate, gate and register a model on the built-in dataset (no cluster)"
	@echo "make test     run the test suite"
	@echo "make lint     ruff"
	@echo "make compile  write pipelines/compiled/*.yaml"
	@echo "make serve    serve the demo's champion with KServe's model server (MODEL=..., PORT=...)"
	@echo "make system-deps  install Prometheus, Chromium and PostgreSQL (Debian) for the tests that use them"
	@echo "make images kind-up kind-load submit e2e kind-down   the kind cluster path (docs/run-on-kind.md)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> installing kfp-lifecycle and its pinned dependencies into $(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lifecycle demo --output $(DEMO_OUTPUT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

compile: $(STAMP)
	$(BIN)/lifecycle compile

serve: $(STAMP)
	$(BIN)/lifecycle serve --model $(MODEL) --port $(PORT)

# requirements.lock: the runtime closure of pyproject.toml's pins (with the onnx extra),
# resolved in a clean environment; the image installs exactly this (Dockerfile).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet ".[onnx]"
	.lock-venv/bin/python -m pip freeze --exclude kfp-lifecycle > requirements.lock
	rm -rf .lock-venv
	@echo "wrote requirements.lock"

# MLServer lives in its own environment (its pins differ from KServe's); the bundle's
# pipeline needs this package importable there, without its dependencies.
MLSERVER_VENV := bench/.venv-mlserver
$(MLSERVER_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install --quiet mlserver==1.7.1 mlserver-sklearn==1.7.1 \
		scikit-learn==1.9.1 pandas==2.3.3 numpy==2.4.6 xgboost-cpu==3.2.0 kfp==2.17.0 pydantic
	$(MLSERVER_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $@

# BEFORE=DIR adds a checkout of older code (e.g. `git worktree add DIR <commit>`) to compare.
bench-serving: $(STAMP) $(MLSERVER_VENV)/.installed
	$(BIN)/python bench/serving_floor.py --mlserver-python $(MLSERVER_VENV)/bin/python \
		$(if $(BEFORE),--before $(BEFORE))

# Evidently in its own environment too: drift verdicts compared on the same data.
EVIDENTLY_VENV := bench/.venv-evidently
$(EVIDENTLY_VENV)/.installed:
	$(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/python -m pip install --quiet evidently==0.7.23 pandas==2.3.3 \
		numpy==2.4.6 scikit-learn==1.9.1 pyarrow==26.0.1
	@touch $@

bench-drift: $(STAMP) $(EVIDENTLY_VENV)/.installed
	$(BIN)/python bench/drift_vs_evidently.py --evidently-python $(EVIDENTLY_VENV)/bin/python

# Debian packages that some tests run for real (they skip, saying why, without them):
# Prometheus for the canary analysis, Chromium to render the HTML reports, PostgreSQL for
# the database sources (its binaries live in /usr/lib/postgresql/<version>/bin, off PATH).
SYSTEM_TOOLS := prometheus chromium postgresql
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
		case $$tool in \
		postgresql) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing $$tool";; \
		*) command -v $$tool >/dev/null || missing="$$missing $$tool";; \
		esac; \
	done; \
	if [ -n "$$missing" ]; then \
		echo ">> installing$$missing (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# --- the cluster path (docs/run-on-kind.md); versions pinned in versions.env --------------
IMAGE = $(shell $(BIN)/python -c 'from kfp_lifecycle.image import image; print(image())')
KFP_HOST ?= http://localhost:8080

images: $(STAMP)
	@echo ">> building $(IMAGE)"
	docker build -t $(IMAGE) .

kind-up:
	bash cluster/kind-up.sh

kind-load: $(STAMP)
	@echo ">> loading $(IMAGE) into kind cluster kfp-lifecycle"
	kind load docker-image $(IMAGE) --name kfp-lifecycle

submit: $(STAMP)
	$(BIN)/lifecycle submit training --host $(KFP_HOST) --wait \
		--param data=s3://data/churn.csv --param target=churned \
		--param registry=s3://models/registry --param model_name=churn \
		--param 'gate_options={"thresholds": {"roc_auc": 0.7}}'

e2e: $(STAMP)
	LIFECYCLE_E2E_REQUIRED=$${LIFECYCLE_E2E_REQUIRED:-1} KFP_HOST=$(KFP_HOST) $(BIN)/python -m pytest -m cluster tests/e2e -v

kind-down:
	@echo ">> deleting kind cluster kfp-lifecycle"
	kind delete cluster --name kfp-lifecycle

clean:
	rm -rf $(VENV) $(DEMO_OUTPUT) local_outputs .pytest_cache .ruff_cache
