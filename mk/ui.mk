# ui/: the Gradio triage chat, a client of Triton (python -m ui; flags and variables in docs/ui.md).
#   make ui [UI_ARGS="--triton-url triton:8001 --port 7860"]
# Without --triton-url it talks to 127.0.0.1:8001 (`make serve`), or to WINGPT_URL when set.
UI_ARGS ?=

.PHONY: ui test-ui

ui: setup
	$(PY) -m ui $(UI_ARGS)

# The UI's tests only (browser tests start their own Triton server and UI): make test-ui
test-ui: setup
	$(PY) -m pytest -q tests/test_ui_*.py $(PYTEST_ARGS)
