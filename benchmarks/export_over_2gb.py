"""``gpt2-export`` with benchmark-side workarounds for graphs over protobuf's 2 GiB limit.

GPT-2 774M (3.1 GiB of fp32 weights) and 1.5B (6.2 GiB) stop in ``gpt2-export``'s first step as it
is (measured 2026-12-07, onnxruntime 1.32, optimum 2.1): Optimum's export post-processing (the
removal of the tied LM head's duplicate initializer) loads the whole graph and asks its
``ByteSize()``, which protobuf refuses above 2 GiB ("EncodeError: Failed to serialize proto").
The exporter's ``onnx_files.save_model`` asks the same ``ByteSize()`` to decide on external data,
so the fused graph would stop there next. This launcher, for the benchmarks only, runs the
exporter's own command with

1. Optimum's post-processing off (``no_post_process=True``: the Optimum graph, only the parity
   reference, keeps the duplicate head, +V×E×4 bytes on disk);
2. ``save_model`` taking external data whenever ``ByteSize()`` refuses;
3. the int8 recipe's ``type_intermediates`` (onnx shape inference, which serializes the whole
   model: the same refusal, the third place 774M stops) run on a copy of the graph whose large
   initializers carry their type and shape but no bytes: types are all it reads.

Everything else is the exporter as it is (fused graph, parity, recipe, verification, quality
gate), so the time and memory it records are what a fixed exporter would need.

    python benchmarks/export_over_2gb.py CKPT --quantize -o OUT     # same flags as gpt2-export
"""

from __future__ import annotations

import sys


def patch() -> None:
    import optimum.exporters.onnx as optimum_onnx
    from google.protobuf.message import EncodeError
    from gpt2_edge.exporter import onnx_files

    plain_export = optimum_onnx.main_export

    def main_export(*args, **kwargs):  # type: ignore[no-untyped-def]
        return plain_export(*args, **{**kwargs, "no_post_process": True})

    optimum_onnx.main_export = main_export
    plain_save = onnx_files.save_model

    def save_model(model, path, external=None):  # type: ignore[no-untyped-def]
        if external is None:
            try:
                external = model.ByteSize() > onnx_files.PROTO_LIMIT
            except EncodeError:  # over 2 GiB: protobuf cannot even count it
                external = True
        return plain_save(model, path, external)

    onnx_files.save_model = save_model

    from gpt2_edge.exporter.recipes import int8

    plain_type = int8.type_intermediates

    def type_intermediates(model):  # type: ignore[no-untyped-def]
        import onnx

        light = onnx.ModelProto()
        light.ir_version = model.ir_version
        light.opset_import.extend(model.opset_import)
        graph = light.graph
        for field in ("node", "input", "output", "value_info"):
            getattr(graph, field).extend(getattr(model.graph, field))
        for t in model.graph.initializer:
            if len(t.raw_data) > 1 << 20:  # type and shape only
                stub = graph.initializer.add()
                stub.name, stub.data_type = t.name, t.data_type
                stub.dims.extend(t.dims)
            else:
                graph.initializer.append(t)
        before = len(graph.value_info)
        count = plain_type(light)
        model.graph.value_info.extend(graph.value_info[before:])
        return count

    int8.type_intermediates = type_intermediates


if __name__ == "__main__":
    patch()
    from gpt2_edge.exporter.cli import main

    sys.argv[0] = "gpt2-export"
    main()
