"""``python -m gpt2_edge.pack``: the same as ``gpt2-pack``."""

from .cli import main

main()
