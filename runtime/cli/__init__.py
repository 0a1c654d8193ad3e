"""The command lines of the runtime (``gpt2-generate``, ``gpt2-eval``) and what every command of
the project shares: one sentence and an exit code for a user's mistake, Ctrl-C and signals."""
