# The project's single entry point. `make demo` sets up and runs the main job; `make test` runs the tests.
PY := .venv/bin/python

.PHONY: setup demo test bench gpu clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m crawler.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

bench: setup
	$(PY) bench/crawl.py

gpu: setup
	@bash scripts/setup-gpu.sh

clean:
	rm -rf output/images output/originals output/dropped output/catalog.db* output/last-crawl.log \
		output/demo-training output/demo-rules.yaml output/demo-lora output/faces
