"""Writing a bundle: the staging folder renamed into place only when complete, the manifest, the
tokenizer file and onnxruntime-genai's description of the same graph."""
