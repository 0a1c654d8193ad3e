"""KV-cache decoders: one interface (:class:`.interface.Decoder`) over the two ways a graph keeps
its cache (preallocated shared buffers for the fused graph, a growing past for Optimum's), each
owning how its graph runs."""
