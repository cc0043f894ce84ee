"""Entry point for ``python -m onnx_prune``."""

from onnx_prune.cli import main

raise SystemExit(main())
