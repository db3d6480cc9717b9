# Two commands matter: `make demo` (the main job on the built-in dataset) and `make test`.
# Both create/refresh the project's virtual environment in .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,ray,onnx,tensorboard]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/pmp sweep configs/sweeps/demo.yaml
	$(BIN)/pmp report work_dirs/sweeps/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf work_dirs .pytest_cache .hypothesis
