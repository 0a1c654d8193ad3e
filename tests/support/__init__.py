"""What the tests share besides fixtures: tiny random models (``tiny_models``: transformers
checkpoints; ``fused_bundle``: a fused-graph bundle built with onnx and numpy), the fake session
that stands in for onnxruntime (``fakes``), the bundles ``gpt2-export`` ships (``shipped``) and the
checks every command's user errors go through (``sentences``).

Test modules import them as ``from support.fakes import FakeSession`` (pyproject's
``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on the path).
"""
