# Every target depends on .venv: on a fresh clone `make test` alone sets everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision pins are the builds that lie on this project's machines' disk; pip takes
# them from there. pyproject.toml declares ranges, so users may install any newer release.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test lint bench-cifar bench-suites smoke clean report-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q tests suites/test_benchmarks.py suites/test_method_speed.py --benchmark-disable -p no:cacheprovider

lint: install
	$(BIN)/ruff check hpff_bench tests suites

# PRESET=quick (default) | proxy (the seeded accuracy study, docs/accuracy.md: its own results/cifar10-proxy/) | paper
bench-cifar: install
	$(BIN)/hpff-bench sweep suites/cifar10.toml --preset $${PRESET:-quick} --resume --data-root $${DATA_ROOT:-data}; rc=$$?; \
	case "$${PRESET:-quick}" in proxy) d=cifar10-proxy;; *) d=cifar10;; esac; \
	$(BIN)/hpff-bench report results/$$d -o reports/$$d && exit $$rc

# BENCH_PRESET=quick (CPU, ~2-3 min on 2 cores) | paper (GPU); BENCH_ARGS: more pytest options
bench-suites: install
	mkdir -p results/benchmarks
	$(BIN)/python -m pytest suites/ --benchmark-only -p no:cacheprovider \
		--hpff-preset $${BENCH_PRESET:-quick} \
		--benchmark-json results/benchmarks/pytest-benchmark.json $(BENCH_ARGS)
	$(BIN)/python -m hpff_bench report results/benchmarks/pytest-benchmark.json -o reports/benchmarks

# REPORT=DIR (default reports/cifar10): open DIR/index.html in headless Chromium at 1,400 px,
# check every figure is whole, write DIR/browser-check-1400.png. Needs Chromium; not part of test.
report-check: install
	$(BIN)/python -m hpff_bench.report.browser_check $${REPORT:-reports/cifar10} --width 1400

clean:
	rm -rf $(VENV) build *.egg-info
