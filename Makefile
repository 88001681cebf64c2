# Every target bootstraps .venv on first use, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DEMO_OUTPUT ?= demo-output
PORT        ?= 8080
MODEL       ?= $(DEMO_OUTPUT)/registry/churn@champion

.PHONY: help venv demo test lint compile serve clean system-deps

help:
	@echo "make demo     train, evaluate, gate and register a model on the built-in dataset (no cluster)"
	@echo "make test     run the test suite"
	@echo "make lint     ruff"
	@echo "make compile  write pipelines/compiled/*.yaml"
	@echo "make serve    serve the demo's champion with KServe's model server (MODEL=..., PORT=...)"
	@echo "make system-deps  install Prometheus and Chromium (Debian) for the tests that use them"

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

# Debian packages that some tests run for real (they skip, saying why, without them):
# Prometheus for the canary analysis, Chromium to render the HTML reports.
SYSTEM_TOOLS := prometheus chromium
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo ">> installing$$missing (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) $(DEMO_OUTPUT) local_outputs .pytest_cache .ruff_cache
