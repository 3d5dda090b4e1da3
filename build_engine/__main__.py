"""`python -m build_engine ...`: compile a WiNGPT2 checkpoint into a TensorRT-LLM engine."""

from build_engine.cli import main

raise SystemExit(main())
