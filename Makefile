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
	python3 -m bench.overhead && python3 -m bench.stop_many && python3 -m bench.slack_latency \
	  && python3 -m bench.swap_downtime && python3 -m bench.request_to_healthy \
	  && python3 -m bench.client_outage && python3 -m bench.swarm_scale
