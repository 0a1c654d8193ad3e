"""The bundle contract: the manifest, its schema, the files and their hashes, the tokenizer, and
the derivation of the same description from a plain Optimum export."""
