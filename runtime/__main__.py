"""``python -m gpt2_edge.runtime``: the same as ``gpt2-generate``."""

from .cli.generate import main

main()
