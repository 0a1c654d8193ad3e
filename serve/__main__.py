"""``python -m gpt2_edge.serve``: the same as ``gpt2-serve``."""

from .cli import main

main()
