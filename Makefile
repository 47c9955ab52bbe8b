# Two set-up commands: `make run` (the main job) and `make test` (the suite). Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
# Unless you set BENCH_DATA_DIR, a local MovieLens copy beside the checkout (this project's machines keep one
# there); without either, the loader uses its cache or downloads (docs/cli.md, "Where the data comes from").
BENCH_DATA_DIR ?= $(firstword $(wildcard ../shared/data/ml-100k))
export BENCH_DATA_DIR
# the strongest simple baseline, the NeuMF baseline and our best model family with the user's history
ARGS ?= --models ease,neumf,deepfm+history

.PHONY: install run test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build in the local wheel folder; an unpinned torch pulls CUDA builds
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test,plot,postgres,docs,mlflow,checkpoints]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/bench run $(ARGS)

test: install
	$(PY) -m pytest -q -n auto  # one worker per core (pytest-xdist)

bench: install
	$(PY) -m pip install -q -e ".[bench]"  # the peer libraries tests/bench_peers.py times
	$(PY) -m pytest tests/bench_*.py --benchmark-only --benchmark-columns=min,median,max,rounds

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
