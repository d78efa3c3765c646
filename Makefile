# Two commands on a fresh machine: `make demo`, then `make test`. `make serve` runs the server in the foreground.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SMALL := checkpoints/small
SERVE_ARGS ?= --checkpoint_dir $(SMALL) --diffusion_transformer_dir Cosmos-1.0-Diffusion-Small-Text2World \
	--v2w_diffusion_transformer_dir Cosmos-1.0-Diffusion-Small-Video2World

.PHONY: setup system-deps checkpoints demo serve test lint repository perf

setup: $(VENV)/.installed system-deps

# Debian's WordNet, from which the small guardrail checkpoint's nltk_data is built (no downloads at run time).
system-deps:
	@bash export/install_system_deps.sh

# torch first and pinned: the local CPU build; a looser spec would pull GBs of CUDA wheels. Every other version is
# pinned by constraints.txt (pyproject.toml states compatible ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[server,client,triton,dev]'
	touch $@

checkpoints: setup
	$(PY) -m export.make_small_checkpoints --out $(SMALL)

demo: checkpoints
	$(PY) -m cosmos_triton.demo $(SERVE_ARGS) --video_save_folder outputs

serve: checkpoints
	$(PY) -m cosmos_triton.server $(SERVE_ARGS)

test: lint
	$(PY) -m pytest -q

# ruff (pyproject: E,F,W,I,B,UP,SIM,RET,ARG,C90,RUF) and mypy (basic mode) on the package, clients, benchmarks
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# perf_analyzer against a running `make serve`: MODEL=video2world CONCURRENCY=2 make perf
perf: setup
	bash benchmarks/perf_analyzer.sh $(or $(MODEL),text2world) localhost:8001 $(or $(CONCURRENCY),1)

repository: setup
	$(PY) -m cosmos_triton.server.repository
