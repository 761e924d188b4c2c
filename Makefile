# deskgen — entry points. `make help` lists them.
SHELL := /bin/bash
PY ?= .venv/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: help setup stack-up stack-down stack-status topics dev-models demo test test-unit test-integration test-e2e env bench bench-gpu chart-check chaos lint asyncapi

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

setup: .venv/.installed ## create .venv and install pinned dependencies (torch CPU/CUDA build, ML stack, dev tools), fetch the object detectors
	bash stack/detectors.sh

.venv/.installed: pyproject.toml
	bash stack/system-deps.sh setup
	test -x .venv/bin/python || python3.11 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e '.[dev,bench]'
	bash stack/dev-path.sh
	touch $@

stack-up: ## start Kafka (KRaft) and the S3 server on 127.0.0.1, wait until ready (idempotent)
	bash stack/system-deps.sh demo
	$(PY) stack/localstack.py up

stack-down: ## stop the local stack (idempotent); data and logs stay in .stack/
	$(PY) stack/localstack.py down

stack-status: ## show what the local stack is running
	$(PY) stack/localstack.py status

topics: setup ## create the pipeline topics on the configured broker
	.venv/bin/deskgen topics create

env: setup ## print the settings (stack + dev models) for the CLI or a service run by hand; use: eval "`make -s env`"
	@$(PY) stack/devenv.py

dev-models: setup ## build the tiny dev-weight models used by the demo and the tests
	.venv/bin/deskgen models build-dev all --size tiny

demo: setup ## fresh machine: stack up, three services, sample photos through every stage, results printed
	bash stack/system-deps.sh demo
	$(PY) stack/demo.py

test: setup ## all tests: unit, chart, then integration and e2e against the real local stack (started if needed)
	bash stack/system-deps.sh test
	$(PY) stack/localstack.py up
	$(PY) -m pytest tests

test-unit: setup ## unit tests only (no broker, no system tools)
	$(PY) -m pytest tests/unit

test-integration: setup ## integration tests: the runtime and clients against the real local Kafka and S3 (started if needed)
	bash stack/system-deps.sh demo
	$(PY) stack/localstack.py up
	$(PY) -m pytest tests/integration

test-e2e: setup ## end-to-end tests: the real services as processes (and a real Prometheus) on the local stack
	bash stack/system-deps.sh test
	$(PY) stack/localstack.py up
	$(PY) -m pytest tests/e2e

PYRIGHT := .cache/pyright/node_modules/.bin/pyright
PYRIGHT_VERSION := 1.1.414

lint: setup ## pyright (every import resolves; pyrightconfig.json) and pyflakes over the Python code
	bash stack/system-deps.sh test
	test -x $(PYRIGHT) && $(PYRIGHT) --version | grep -q $(PYRIGHT_VERSION) \
	  || npm install --silent --prefix .cache/pyright pyright@$(PYRIGHT_VERSION)
	$(PYRIGHT)
	$(PY) -m pyflakes common services stack k8s tests examples/backend-python docker

asyncapi: setup ## regenerate docs/asyncapi.yaml from the schemas and the code, then check it (AsyncAPI parser from npm, installed on first use)
	$(PY) stack/asyncapi.py
	$(PY) -m pytest -q tests/contract

chart-check: setup ## lint, render and validate the Helm chart; check and unit-test the alerts; hadolint the Dockerfiles
	PY=$(PY) helm/chart-check.sh

chaos: setup ## chaos run: 100 kill -9s, a broker restart and a 30 s S3 outage under load; checks exactly-once (~9 min)
	bash stack/system-deps.sh demo
	$(PY) stack/chaos.py

bench: setup ## benchmarks; prints tables (run alone: 2 cores are noisy)
	bash stack/system-deps.sh demo
	$(PY) stack/localstack.py up
	$(PY) tests/bench/bench_spine.py
	$(PY) tests/bench/bench_classifier.py
	$(PY) tests/bench/bench_captioner.py
	$(PY) tests/bench/bench_generator.py
	$(PY) tests/bench/bench_catalogue.py
	$(PY) tests/bench/bench_products.py
	$(PY) tests/bench/soak_generator.py

bench-gpu: setup ## GPU benchmarks in one command (generator service vs plain diffusers, captioner fp16, LoRA training steps/s); needs CUDA; smoke test without one: make bench-gpu ARGS="--device cpu --size tiny --repeats 2"
	$(PY) tests/bench/gpu.py $(ARGS)
	$(if $(ARGS),,$(PY) tests/bench/bench_captioner.py --gpu --isa native)
	$(if $(ARGS),,$(PY) tests/bench/bench_train_lora.py --device cuda)

# ---- Kubernetes (k8s/; root on Debian: stack/system-deps.sh k8s installs the packages) ----
.PHONY: k8s-tools images k8s-up k8s-down k8s-test k8s-demo

k8s-tools: ## build Kubernetes v1.34, KWOK, Helm and KEDA v2.21 into .cache/k8s/bin (Go module proxy; cached)
	bash stack/system-deps.sh k8s
	k8s/build-tools.sh

images: setup ## build the deskgen images and the dev Kafka/S3 images with podman (debootstrapped base)
	bash stack/system-deps.sh k8s
	PY=$(PY) k8s/images.sh build

k8s-up: k8s-tools ## start the local cluster: two real nodes (the second tainted, for the drain test) + one KWOK fake GPU node (idempotent)
	bash stack/system-deps.sh k8s
	k8s/cluster.sh up

k8s-down: ## stop the local cluster by PID; bridges, iptables and sysctls restored (idempotent)
	bash stack/system-deps.sh k8s
	k8s/cluster.sh down

k8s-test: setup ## images, cluster, KEDA, chart install, helm test, data path, drain, faults, KEDA scaling, placement, metrics; cluster stopped after
	bash stack/system-deps.sh k8s
	PY=$(PY) k8s/test.sh

k8s-demo: setup images ## on a running cluster (make k8s-up): install the chart, send sample photos from a pod, print results
	bash stack/system-deps.sh k8s
	$(PY) k8s/demo.py
