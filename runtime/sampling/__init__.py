"""Sampling: small pure functions on a logits array (penalties, temperature, top-k, top-p, min-p,
greedy, seeded draws) composed in a fixed order by :class:`.sampler.Sampler`."""
