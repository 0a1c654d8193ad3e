"""gpt2_edge.web: the browser runtime's files as package data (no Python code).

This folder is also an npm package (package.json): src/ holds the ES modules of the JavaScript
runtime, page/ the pack's index.html, serve.py and README template. ``gpt2-pack --platform web``
(pack/web.py) copies them into a web pack.
"""
