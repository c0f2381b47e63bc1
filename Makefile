# The two commands of the quick start. Each creates .venv and installs what is
# missing, so on a fresh machine `make demo` and `make test` are the whole set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: install demo test clean

install: $(STAMP)

# torch==2.13.0 is installed first and on its own: a bare `torch` requirement on
# a machine with no torch would pull a multi-gigabyte CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0" || $(BIN)/pip install --quiet "torch>=2.3,<3"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# One torch thread: the demo's matrices are small, and on two cores a second
# thread costs more in synchronization than it saves (measured about 3x slower
# per outer step with two threads on a loaded two-core machine).
demo: $(STAMP)
	$(BIN)/chronos run examples/hyperclean.chronos --threads 1 --output $(OUT)/hyperclean

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
