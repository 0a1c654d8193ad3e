"""Generation: prompts to token ids, the running batch that rows join and leave, text and stop
strings per row, log-probabilities and scoring, beam search, drafting, perplexity, and the
:class:`.generator.Generator` that the command line and the Python API drive."""
