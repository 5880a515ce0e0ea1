# The single entry point: local runs and CI (.ci/run) both call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest deploy-check demo bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check reaper tests bench deploy
	$(BIN)/ruff format --check reaper tests bench deploy
	$(BIN)/hadolint --failure-threshold warning Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# What ships beside the code, checked offline (no Docker, no cluster): Kubernetes schemas (strict),
# the alert rules and their unit tests, the compose Prometheus config, the PrometheusRule copy.
# promtool comes from Debian's prometheus package (.ci/run installs it when missing).
deploy-check: $(STAMP)
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/namespace.yaml \
		deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml \
		deploy/kubernetes/service.yaml deploy/kubernetes/secret.example.yaml
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules_test.yml
	promtool check config deploy/compose/prometheus.yml
	$(BIN)/python deploy/sync_rules.py --check

test: lint typecheck deploy-check pytest

demo: $(STAMP)
	$(BIN)/reaper demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache dist build
