# The two commands of the README: `make train` runs the main job, `make test` the whole suite.
# Each sets up .venv itself on a fresh machine (scripts/setup.sh).
.PHONY: setup train test

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/python jobs/train.py

test: setup
	.venv/bin/python -m pytest
