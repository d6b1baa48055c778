# Two commands on a fresh machine (Debian 12; as root the apt packages are installed too):
#   make run    set everything up, then the main job: `connbench run` (quick profile) and its report
#   make test   set everything up, lint, then the tests (what CI runs: .ci/run)
SHELL := /bin/bash

.PHONY: run test

run:
	set -euo pipefail; source .ci/setup; .venv/bin/connbench run

test:
	bash .ci/run
