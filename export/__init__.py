"""Export (``yoloworld-export``): fold a fixed vocabulary's text embeddings into the detection head and
write ONNX (raw outputs or NMS in the graph; fp32, fp16, int8), TensorRT engines, a Triton model
repository, or an open-vocabulary ONNX pair (detector + text encoder). Every artifact carries a
manifest and is checked against PyTorch before it is written (``export.verify``).

Entry points: ``export.main`` (the ``yoloworld-export`` CLI) and ``export.pipeline.export_artifact`` (one
call from a model and its vocabulary to the checked artifact, as ``export.pipeline.ExportOptions`` say),
which runs the pieces: ``export.onnx_export`` / ``export.open_vocab`` (the graphs), ``export.precision``
and ``export.quantize`` (fp16, int8), ``export.verify`` (the check), ``export.tensorrt`` (engines) and
``export.triton`` (a model repository).
"""
