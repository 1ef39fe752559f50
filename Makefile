# The two commands of the README: `make train` runs the main job, `make test` the whole suite.
# Each sets up .venv itself on a fresh machine (scripts/setup.sh).
.PHONY: setup train test test-all

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/python jobs/train.py

# CI's suite: everything but the multi-minute end-to-end runs marked `slow`.
test: setup
	.venv/bin/python -m pytest -m "not slow"

# Also the slow ones: a two-node cluster with job submission, the S3 end-to-end run, killed
# workers / actor / driver, and ASHA / restore sweeps (~30 min more on 2 cores).
test-all: setup
	.venv/bin/python -m pytest
