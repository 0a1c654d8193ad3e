"""Serve this folder on http://127.0.0.1:8000 with the headers that let the page use WASM threads.

    python3 serve.py [--port 8000] [--host 127.0.0.1]

Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy make the page cross-origin isolated,
which is what lets onnxruntime-web share memory between threads. Pass --host 0.0.0.0 to reach it
from another device; a browser runs threads only on https or on localhost (a secure context).
Needs only Python's standard library.
"""

import argparse
import functools
import http.server
import os


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")  # revalidate: a re-made pack is seen at once
        super().end_headers()


def main():
    parser = argparse.ArgumentParser(description="Serve this gpt2-edge web pack.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    handler = functools.partial(Handler, directory=here)
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler)
    print(f"Serving {here} at http://{args.host}:{args.port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
