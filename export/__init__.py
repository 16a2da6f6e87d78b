"""Export (``yoloworld-export``): fold a fixed vocabulary's text embeddings into the detection head and
write ONNX (raw outputs or NMS in the graph; fp32, fp16, int8), TensorRT engines, a Triton model
repository, or an open-vocabulary ONNX pair (detector + text encoder). Every artifact carries a
manifest and is checked against PyTorch before it is written (``export.verify``).

Entry points: ``export.main`` (the CLI), ``export.onnx_export.export_onnx``,
``export.open_vocab.export_open_vocab``, ``export.tensorrt.build_engine``,
``export.triton.write_triton_repository``.
"""
