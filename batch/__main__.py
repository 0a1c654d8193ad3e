"""``python -m gpt2_edge.batch``: the same as ``gpt2-batch``."""

from .cli import main

main()
