# infergrid: `make serve` and `make test` work from a fresh clone (Linux, Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
REPOSITORY ?= examples/model_repository
HOST ?= 127.0.0.1
PORT ?= 8000
# A CPU build of torch. On the project's machines this wheel is on local disk; any other torch request
# downloads several GB of CUDA wheels. On a GPU machine: make install TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install models serve test test-unit bench peers clean

install: $(VENV)/.installed models

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "infergrid needs Python 3.11+ (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[test]'
	# TF Serving's protos (its config files, its APIs). --no-deps: the wheel asks for the full
	# `tensorflow` package, which would sit beside tensorflow-cpu; the protos need only protobuf.
	$(PIP) install -q --no-deps "tensorflow-serving-api==2.21.0"
	touch $@

models: $(VENV)/.installed
	$(PY) examples/build_repository.py $(REPOSITORY)

serve: install
	$(VENV)/bin/infergrid serve --repository $(REPOSITORY) --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.run --out bench/results
	$(PY) -m bench.hotswap --out bench/results
	$(PY) -m bench.ensemble --out bench/results
	$(PY) -m bench.metrics --out bench/results
	$(PY) -m bench.overload --out bench/results

peers: install
	../shared/peers/setup.sh
	INFERGRID_DIR=$(CURDIR) PEERS="infergrid ts_batch triton ray_haproxy" ../shared/peers/run_peers.sh
	# the peers' .mar: TorchServe and infergrid (--ts-config, /predictions/fraud) side by side
	$(PY) -m bench.torchserve_archive --out bench/results

clean:
	rm -rf $(VENV) $(REPOSITORY)
