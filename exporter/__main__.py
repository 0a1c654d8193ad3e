"""``python -m gpt2_edge.exporter``: the same as ``gpt2-export``."""

from .cli import main

if __name__ == "__main__":
    main()
