# feedpulse: `make demo` runs the pipeline on the embedded default, `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev setup-triton setup-system demo test lint typecheck bench bench-triton bench-quality bench-multilabel bench-alerts bench-online bench-overload bench-faults bench-cold bench-gpu clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "feedpulse needs Python 3.11 ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned in pyproject.toml: the CPU build lies on local disk.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The local Triton server: the real tritonserver in the nvidia-pytriton wheel (installed
# without its Python API's dependencies, which pin numpy < 2), and a separate environment
# for its python-backend stubs, which only work with numpy < 2.
$(VENV)/.installed-triton: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-deps nvidia-pytriton==0.7.0
	$(PYTHON) -m venv $(VENV)/triton-env
	$(VENV)/triton-env/bin/pip install --quiet "numpy<2" onnxruntime
	touch $@

# Real Prometheus and Alertmanager (plus promtool and amtool) for the alerting tests.
setup-system:
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
			prometheus prometheus-alertmanager; }

setup: $(VENV)/.installed

setup-triton: $(VENV)/.installed-triton

setup-dev: $(VENV)/.installed-dev

demo: setup
	$(BIN)/feedpulse demo

lint: setup-dev
	$(BIN)/ruff check streams serving online tests bench
	$(BIN)/ruff format --check streams serving online tests bench
	$(BIN)/lint-imports

typecheck: setup-dev
	$(BIN)/mypy

test: lint typecheck setup-triton setup-system
	$(BIN)/pytest
	$(BIN)/python .ci/audit_deps.py --python $(BIN)/python

bench: setup-dev
	$(BIN)/python bench/throughput.py

bench-triton: setup-dev setup-triton
	$(BIN)/python bench/triton_vs_inprocess.py

# About an hour on 2 cores: fast path, fine-tuning, and a new-domain incremental fine-tune.
bench-quality: setup-dev
	$(BIN)/python bench/model_quality.py

# About 15 minutes: fast-path models with and without a multi-label GoEmotions emotion head.
bench-multilabel: setup-dev
	$(BIN)/python bench/multilabel.py

# Seconds: the spike detector over 50 hours of seeded replay with injected bursts.
bench-alerts: setup-dev
	$(BIN)/python bench/alerts.py

# About 20 minutes: the domain-switch scenario on a real broker with the watch and trainer.
# Needs a fine-tuned version (`feedpulse train`) in MODELS (default triton_models).
# ADAPTER=full,lora runs it once per adapter of the trainer's fine-tune and compares them.
MODELS ?= triton_models
bench-online: setup-dev
	$(BIN)/python bench/online_learning.py --repository $(MODELS) $(if $(ADAPTER),--adapter $(ADAPTER))

# 30-40 minutes: the full fault campaign (100+ faults of every kind) over the whole loop.
bench-faults: setup-dev setup-triton
	$(BIN)/python bench/faults.py

# A few minutes: a worker joining a busy group, with and without the warm-up.
bench-cold: setup-dev
	$(BIN)/python bench/cold_start.py

# The model's GPU ceiling (fp16, CUDA, sequence 128, batch 64 and 128), model alone and with
# tokenization; DEVICE=cpu runs the same script in fp32 where there is no GPU.
DEVICE ?= auto
bench-gpu: setup-dev
	$(BIN)/python bench/gpu_ceiling.py --device $(DEVICE)

# A few minutes: one worker offered twice its measured capacity, then the backlog drains.
bench-overload: setup-dev
	$(BIN)/python bench/overload.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
