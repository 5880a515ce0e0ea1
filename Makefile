# The single entry point: local runs and CI (.ci/run) both call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/runtime.txt
# pip-compile with only the public index: no machine's local pip configuration leaks into the lock.
# `make lock LOCK_UPGRADE=` adds a new dependency and keeps every other pin where it is.
LOCK_UPGRADE ?= --upgrade
PIP_COMPILE := env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" \
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	--no-emit-find-links $(LOCK_UPGRADE)

.PHONY: venv test test-fast lint typecheck format pytest deploy-check image-test lock demo bench clean

# The dev venv takes the runtime dependencies at the versions the lock pins (its hashes dropped:
# an editable install cannot be hash-checked), so the tests run what the image ships.
$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	sed -e '/^ *--hash/d' -e 's/ *\\$$//' $(LOCK) > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check reaper tests bench deploy
	$(BIN)/ruff format --check reaper tests bench deploy
	$(BIN)/hadolint --failure-threshold warning Dockerfile

format: $(STAMP)
	$(BIN)/ruff check --fix reaper tests bench deploy
	$(BIN)/ruff format reaper tests bench deploy

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# The quick loop: lint, types and every test not marked `slow`; no image, no deploy tools.
test-fast: lint typecheck
	$(BIN)/pytest -m "not slow"

# What ships beside the code, checked offline (no Docker, no cluster): Kubernetes schemas (strict),
# the alert rules and their unit tests, the compose Prometheus config, the PrometheusRule copy.
# promtool comes from Debian's prometheus package (.ci/run installs it when missing).
deploy-check: $(STAMP)
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/namespace.yaml \
		deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml \
		deploy/kubernetes/service.yaml deploy/kubernetes/secret.example.yaml \
		deploy/kubernetes/holds.example.yaml
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules_test.yml
	promtool check config deploy/compose/prometheus.yml
	$(BIN)/python deploy/sync_rules.py --check

# Builds the Dockerfile with podman and runs the image as deploy/kubernetes does (as root; podman,
# runc and debootstrap from Debian: .ci/run installs them). See deploy/image/check.py.
image-test: $(STAMP)
	$(BIN)/python deploy/image/check.py

test: lint typecheck deploy-check pytest image-test

# Re-resolve the lock files from pyproject.toml (newest releases in its ranges), with hashes.
# CONTRIBUTING.md: "Dependencies / refresh the lock".
lock: $(STAMP)
	$(PIP_COMPILE) --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --only-build-deps --build-deps-for=wheel --output-file requirements/build.txt \
		pyproject.toml

demo: $(STAMP)
	$(BIN)/reaper demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache dist build
