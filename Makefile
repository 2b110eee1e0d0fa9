# Two commands do all the set-up on a fresh machine:
#   make run    napari with the plugin and a sample volume (headless demo where there is no screen)
#   make test   the whole test suite (GUI tests under Xvfb)
PYTHON ?= python3
export PYTHON

.PHONY: install run test
install:
	bash scripts/install.sh

run: install
	bash scripts/run.sh

test: install
	$$(bash scripts/python.sh) -m pytest -q
