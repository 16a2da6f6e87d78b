# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench parity

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[train,export,openvino,ray,serve,dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m training.finetune
	$(VENV)/bin/yoloworld-predict runs/demo_finetune/data/val --weights runs/demo_finetune/best.pt \
		--out runs/demo_finetune/predict

test: $(VENV)/.installed
	-PYTHON=$(PY) bash cpp_samples/scripts/setup_deps.sh  # C++ sample deps; never fails (tests skip)
	-bash tests/serving/setup_browser.sh  # chromium for the server page's browser test; never fails (it skips)
	$(PY) -m ruff check .
	$(PY) -m mypy  # sdk/, labeling/, bench/, serving/ (pyproject.toml [tool.mypy])
	$(PY) -m pytest -q
	$(PY) tests/rerun_numeric.py  # the numerically sensitive tests again under AVX2 kernels and one thread

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_torch_cpu.py

parity: $(VENV)/.installed
	$(PY) benchmarks/official_parity.py
