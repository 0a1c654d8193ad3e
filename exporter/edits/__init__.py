"""Graph edits: small rewrites of a built ONNX graph (activation quantization per row, the float16
KV cache, node and initializer rewrites), each numerically neutral or stated."""
