# mlops-operator developer entry points. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
PYTEST_ARGS ?=
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: venv
venv: ## create/reuse the cached virtualenv (requirements.lock) and link it as .venv
	@bash hack/venv.sh

.PHONY: tools
tools: ## build/reuse the cached Kubernetes control plane, etcd, kwok and helm binaries
	@bash hack/build-tools.sh

.PHONY: crds
crds: venv ## regenerate crds/ and charts/mlops-operator/crds/ from the API models
	$(PY) -m mlops_operator.cli crds

.PHONY: lint
lint: venv ## ruff, mypy --strict on the package, import layering, CRDs up to date
	$(VENV)/bin/ruff check operator hack tests
	$(VENV)/bin/ruff format --check operator hack tests
	$(VENV)/bin/mypy operator/mlops_operator
	$(VENV)/bin/lint-imports
	$(PY) -m mlops_operator.cli crds --check

.PHONY: fmt
fmt: venv ## apply ruff's formatter and autofixes
	$(VENV)/bin/ruff format operator hack tests
	$(VENV)/bin/ruff check --fix operator hack tests

.PHONY: test
test: venv tools lint ## every tier: unit, cluster (real control plane), e2e
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests

.PHONY: test-unit
test-unit: venv ## unit tier only (no I/O)
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/unit

.PHONY: test-cluster
test-cluster: venv tools ## cluster tier only (starts or reuses the local control plane)
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/cluster

.PHONY: cluster-up
cluster-up: venv tools ## start the local control plane + kwok GPU/CPU nodes (prints KUBECONFIG)
	$(PY) hack/local_cluster.py up

.PHONY: cluster-down
cluster-down: venv ## stop every process of the local control plane
	$(PY) hack/local_cluster.py down

.PHONY: cluster-status
cluster-status: venv ## health of each control-plane component
	$(PY) hack/local_cluster.py status

.PHONY: run
run: venv tools ## the main job: local control plane + CRDs + the operator in the foreground (Ctrl-C stops it)
	@bash hack/run-local.sh

.PHONY: demo
demo: venv tools ## the whole loop for real: train -> serve -> drift -> retrain -> promote (< 10 min)
	$(PY) hack/demo.py run

.PHONY: demo-down
demo-down: venv ## stop everything `make demo` started
	$(PY) hack/demo.py down

.PHONY: bench-operator
bench-operator: venv tools ## operator scale benchmark (N=100..2000 TrainingJobs; BENCH_ARGS="--sizes 100 --soak-minutes 10")
	$(PY) benchmarks/operator/run.py $(BENCH_ARGS)

.PHONY: helm-lint
helm-lint: tools ## helm lint --strict the chart
	$$(bash hack/build-tools.sh --print | sed -n 's/^helm=//p') lint --strict charts/mlops-operator

.PHONY: test-chart
test-chart: venv tools ## the chart, RBAC and Argo CD health checks
	$(PY) -m pytest -ra tests/cluster/test_helm_chart.py tests/unit/test_argocd_health.py tests/unit/test_chart_images.py

.PHONY: images
images: ## build the operator and runtime images (needs Docker)
	docker build -t ghcr.io/mlops-operator/operator:0.1.0 .
	docker build -f Dockerfile.runtime -t ghcr.io/mlops-operator/runtime:0.1.0 .

.PHONY: kind-up
kind-up: ## create a kind cluster (needs Docker and kind)
	bash hack/kind-up.sh

.PHONY: kind-deploy
kind-deploy: ## build and load the images into kind, helm install the chart
	bash hack/kind-deploy.sh

.PHONY: lock
lock: ## rebuild requirements.lock from pyproject.toml in a scratch venv
	rm -rf /tmp/mlops-lock-venv && python3 -m venv /tmp/mlops-lock-venv
	/tmp/mlops-lock-venv/bin/pip install -q --upgrade pip && /tmp/mlops-lock-venv/bin/pip install -q -e '.[dev]'
	{ head -2 requirements.lock; /tmp/mlops-lock-venv/bin/pip freeze --exclude-editable | grep -v '^mlops-operator'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

.PHONY: clean
clean: cluster-down ## stop the cluster and remove local state (caches in ~/.cache/mlops-operator stay)
	rm -rf .cluster .pytest_cache .mypy_cache .ruff_cache
