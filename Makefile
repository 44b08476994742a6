.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	rollback-bot demo

test: setup
	python3 -m pytest

lint:
	ruff check . && ruff format --check . && mypy

bench:
	python3 -m bench.overhead && python3 -m bench.stop_many
