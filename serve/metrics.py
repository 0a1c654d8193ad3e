"""The server's Prometheus metrics (``GET /metrics``), in a registry of its own per app.

Names start with ``gpt2_serve_``. Requests are counted by route and status code by an ASGI
middleware (:class:`RequestCounter`), so errors that never reach a handler (a 404, a 401 from
the key check, a 413) count too.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; a 124M int8 model on two cores takes ~0.1 s to a first token and a few seconds to
# 64 tokens under load, so the buckets span milliseconds to minutes.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """Every metric the server exports; thread-safe (the scheduler thread updates most)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "gpt2_serve_requests",
            "HTTP requests answered, by route and status code.",
            ["path", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "gpt2_serve_prompt_tokens", "Prompt tokens that joined the batch.", registry=r
        )
        self.generated_tokens = Counter(
            "gpt2_serve_generated_tokens", "Tokens generated.", registry=r
        )
        self.cancelled_rows = Counter(
            "gpt2_serve_cancelled_rows",
            "Rows freed before they finished: the client disconnected or stopped reading.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "gpt2_serve_queue_depth", "Requests waiting for a row.", registry=r
        )
        self.batch_rows = Gauge("gpt2_serve_batch_rows", "Rows in the running batch.", registry=r)
        self.step_rows = Histogram(
            "gpt2_serve_step_batch_size",
            "Rows per model step.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gpt2_serve_time_to_first_token_seconds",
            "From a request's arrival in the queue to its first token.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "gpt2_serve_request_latency_seconds",
            "From a generation request's arrival in the queue to its last token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
