# EdgeTier developer targets. `make up` runs a whole fleet on this machine (`edgetier up`:
# a controller, three nodes, demo deployments); `make serve` one node on the demo models;
# `make test` installs everything the tests need and runs them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
DEMO_REPO ?= var/demo-models
HOST ?= 127.0.0.1

.PHONY: venv install install-test system-deps demo-repo up serve test lint typecheck peers bench bench-docs models clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python

install: venv
	$(PIP) -e '.[video,bench,control]'

install-test: venv
	$(PIP) -e '.[video,bench,control,test]'

# Debian packages the integration tests start themselves: the MQTT broker, an RTSP
# relay (rtsp-server-perl), PostgreSQL (the tests run their own cluster with initdb) and the
# headless browser that drives the dashboard test (chromium with its chromium-driver); only
# the missing ones are installed. The packaged services of the relay (ports 554/5545 on
# every interface) and of PostgreSQL (port 5432) are not needed and are turned off.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || missing="$$missing mosquitto"; \
	command -v rtsp-server-perl >/dev/null 2>&1 || missing="$$missing rtsp-server-perl"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	[ -z "$$missing" ] || ( \
	  (apt-get update -qq || sudo apt-get update -qq) && \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || \
	   sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) && \
	  case "$$missing" in *rtsp-server-perl*) \
	    (systemctl disable --now rtsp-server-perl || sudo systemctl disable --now \
	     rtsp-server-perl || true) >/dev/null 2>&1;; esac; \
	  case "$$missing" in *postgresql*) \
	    (systemctl disable --now postgresql || sudo systemctl disable --now \
	     postgresql || true) >/dev/null 2>&1;; esac )

demo-repo: install
	$(BIN)/edgetier model demo $(DEMO_REPO)

up: install
	$(BIN)/edgetier up

serve: demo-repo
	$(BIN)/edgetier serve --model-repository $(DEMO_REPO) --host $(HOST) --print-examples

test: install-test system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# The peers that `edgetier bench compare` starts beside EdgeTier. PyTriton 0.7 needs
# numpy < 2, so they live in their own venv; compare finds it (--peer-python).
peers: .venv-peers/bin/python
.venv-peers/bin/python:
	$(PY) -m venv .venv-peers
	.venv-peers/bin/pip install -q 'nvidia-pytriton==0.7.0' 'onnxruntime==1.32.0' 'ray[serve]==2.60.0'

# Every figure of docs/benchmarks.md, measured again on this machine (about 30 minutes on
# 2 cores; run it on a quiet machine), then the page rebuilt from the JSON files.
bench: install peers demo-repo
	$(BIN)/python benchmarks/added_latency.py --repeats 5
	$(BIN)/python benchmarks/grpc_client_latency.py --repeats 5
	$(BIN)/python benchmarks/fixed_cost.py
	$(BIN)/python benchmarks/compare_peers.py --repeats 3 --peer-python .venv-peers/bin/python
	$(BIN)/edgetier bench compare resnet50 --batch-sizes 1,8 --concurrency 1,8 --duration-s 6 \
	  --warmup-s 2 --repeats 3 --intra-op-threads 2 --no-intra-op-spinning --no-plots \
	  --peer-python .venv-peers/bin/python --out benchmarks/results/compare_resnet50_nospin
	$(BIN)/edgetier bench compare resnet50 --systems onnxruntime,edgetier,pytriton \
	  --batch-sizes 1,8 --concurrency 1,8 --duration-s 5 --warmup-s 1 --repeats 4 --interleave \
	  --intra-op-threads 2 --no-intra-op-spinning --no-plots \
	  --peer-python .venv-peers/bin/python --out benchmarks/results/compare_resnet50_interleaved
	$(BIN)/edgetier bench compare resnet50 --systems onnxruntime,edgetier,pytriton \
	  --batch-sizes 1 --concurrency 1 --duration-s 1.5 --warmup-s 0.3 --repeats 20 --interleave \
	  --intra-op-threads 2 --no-intra-op-spinning --no-plots \
	  --peer-python .venv-peers/bin/python --out benchmarks/results/compare_resnet50_b1c1_interleaved
	$(BIN)/edgetier bench compare resnet50 --systems onnxruntime,edgetier,pytriton \
	  --batch-sizes 8 --concurrency 8 --duration-s 12 --warmup-s 3 --repeats 6 --interleave \
	  --intra-op-threads 2 --no-intra-op-spinning --no-plots \
	  --peer-python .venv-peers/bin/python --out benchmarks/results/compare_resnet50_b8c8_interleaved
	$(BIN)/edgetier bench compare resnet50 --systems onnxruntime,edgetier --batch-sizes 1 \
	  --concurrency 1,8 --duration-s 4 --warmup-s 1 --repeats 10 --interleave \
	  --intra-op-threads 2 --no-intra-op-spinning --no-plots \
	  --out benchmarks/results/server_vs_raw_b1_interleaved
	$(BIN)/edgetier bench compare resnet50 --systems onnxruntime,edgetier --batch-sizes 8 \
	  --concurrency 1,2 --duration-s 6 --warmup-s 1 --repeats 8 --interleave \
	  --intra-op-threads 2 --no-intra-op-spinning --no-plots \
	  --out benchmarks/results/server_vs_raw_b8_interleaved
	rm -f benchmarks/results/*.md
	$(BIN)/python benchmarks/pipeline_scaling.py --streams 1,2,4,8,16 --frames 60 --repeats 3
	$(BIN)/python benchmarks/dynamic_batching.py --repeats 3
	$(BIN)/python benchmarks/transports.py --repeats 3
	$(BIN)/python benchmarks/open_loop.py
	$(BIN)/python benchmarks/peak_memory.py
	$(MAKE) bench-docs

bench-docs:
	$(BIN)/edgetier bench docs benchmarks/results --out docs/benchmarks.md --img-dir docs/img

# Retrain the shipped pipeline models (detector + colour classifier) on synthetic scenes,
# on the CPU, then measure their quality on held-out scenes (docs/pipeline-models.md).
models: venv
	$(PIP) -e '.[video,train]'
	$(BIN)/python -m edgetier.synthetic train --out src/edgetier/pipeline/models
	$(BIN)/python -m edgetier.synthetic evaluate --json benchmarks/results/pipeline-quality.json

clean:
	rm -rf $(VENV) var build dist .pytest_cache .mypy_cache .ruff_cache
