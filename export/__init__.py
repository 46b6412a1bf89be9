"""export: `mgca-export` — checkpoint -> bundle (ONNX fp32, int8 QDQ ONNX, TensorRT engines, text cache, manifest).

Modules: `onnx_export` (the graph), `parity` (ONNX vs PyTorch), `text_cache` (vocabulary embeddings
writer), `tensorrt_build` (optional TensorRT engines), `bundle` (manifest), `cli` (`main`).
Imports torch and mgca; `runtime/` never imports this package. See export/README.md.
"""
