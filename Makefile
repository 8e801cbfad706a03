# Quickstart: `make demo` (the main job on the embedded BreastMNIST data) and `make test`.
# Each target creates .venv and installs the pinned set on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU wheel by default; on a CUDA host: make TORCH_SPEC="torch==2.11.0" ...
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.funcml-installed
DEMO_OUT ?= demo-report
PYTEST_ARGS ?=

.PHONY: demo test install docs reference wheel clean

$(STAMP): requirements.lock pyproject.toml setup.py funcml/backends/csrc/cpu_loops.c funcml/backends/csrc/aten_sgemm.cpp
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps medmnist==3.0.2
	# -e: also builds the cpu backend's C loops and ATen sgemm in place, for this machine's CPU and torch (see setup.py)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/funcml demo --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# The generated pages (CLI and API reference), the benchmarks page and the marked tables of the other pages,
# from the code and benchmarks/results/.
reference: $(STAMP)
	$(PY) tools/docgen.py cli > docs/cli.md
	$(PY) tools/docgen.py api > docs/api.md
	$(PY) benchmarks/render_docs.py

# dist/funcml-VERSION-*.whl (the embedded demo data, py.typed and the C loops built for any CPU of this architecture)
wheel: $(STAMP)
	FUNCML_PORTABLE_BUILD=1 $(PY) -m pip wheel . --no-deps --no-build-isolation --quiet -w dist

clean:
	rm -rf $(VENV) $(DEMO_OUT) site build dist *.egg-info funcml/backends/*.so
