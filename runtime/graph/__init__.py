"""The onnxruntime session around a bundle's decoder graph: provider, threads, the graph's tensor
names, and the checks that the manifest describes the graph."""
