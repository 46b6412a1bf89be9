"""ONNX export of the frozen CLIP image encoder (MaskCLIP last layer) + trained decoder as one graph.

The graph computes exactly `MGCA.pixel_embeddings` (docs/inference-contract.md, "Bundle directory"):

* input  `image`      float32 N x 3 x win x win, already mean/std-normalised (CLIP's constants,
  recorded in the metadata and the manifest); N is dynamic, win is fixed per export.
* output `embeddings` float32 N x C x (win/os) x (win/os), L2-normalised along C.

The window is fixed because the bicubic-resampled positional embedding of a fixed grid becomes a
constant of the graph, and the runtime pads every crop to the window anyway. The exporter is
torch's dynamo exporter at opset 18 (the legacy TorchScript exporter bakes the attention's
sequence length into a Reshape). The example batch is 2: a batch-1 example would let the tracer
specialise the batch dimension to 1.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgca.clip_backbone import sha256_tensors
from runtime.contract import DEFAULT_SETTINGS, GRAPH_ROLE_KEY, INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME
from runtime.contract import check_window as check_contract_window
from runtime.errors import MgcaError, SettingsError
from runtime.files import atomic_path

OPSET = 18


class ExportError(MgcaError, RuntimeError):
    """The model cannot be exported or the exported graph is invalid; the message says why (exit status 1)."""

    exit_code = 1


class PixelEmbeddingGraph(nn.Module):
    """What the ONNX graph computes: normalised images -> L2-normalised pixel embeddings."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.pixel_embeddings(image)


def check_window(model: nn.Module, window: int) -> int:
    """`window` if it is a positive multiple of the model's patch size and output stride, else ExportError."""
    try:
        return check_contract_window(window, int(model.output_stride), int(model.backbone.patch_size))
    except SettingsError as err:
        raise ExportError(str(err)) from None


def decoder_sha256(model: nn.Module) -> str:
    """Hash of the trained decoder's weights (the part of the graph that is not the frozen CLIP)."""
    return sha256_tensors(model.decoder.state_dict())


def graph_metadata(model: nn.Module, window: int) -> dict[str, str]:
    """The ONNX metadata_props: architecture, window, strides, embed dim, mean/std, weight hashes."""
    backbone = model.backbone
    identity = backbone.identity
    return {
        "format": ONNX_FORMAT,
        "arch": str(backbone.arch),
        "window": str(window),
        "patch_size": str(backbone.patch_size),
        "output_stride": str(model.output_stride),
        "embed_dim": str(backbone.embed_dim),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_normalized": "true",
        "mean": json.dumps([float(v) for v in backbone.mean]),
        "std": json.dumps([float(v) for v in backbone.std]),
        "dense_mode": str(backbone.dense_mode),
        "backbone_source": str(identity.source),
        "visual_sha256": identity.visual_sha256,
        "text_sha256": identity.text_sha256,
        "decoder_sha256": decoder_sha256(model),
    }


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict (reads the graph structure, not the weights' bytes)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints progress lines and warnings meant for exporter developers; keep them
    out of the CLI's output unless something fails (errors still propagate)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield sink
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, window: int = DEFAULT_SETTINGS.window, optimize: bool = True,
                example_batch: int = 2, extra_metadata: dict[str, str] | None = None) -> Path:
    """Export `model.pixel_embeddings` at a fixed `window` with a dynamic batch; check and return the file.

    `optimize` runs onnxscript's graph optimiser (constant folding, dead-code removal, pattern
    fusions) as part of the export: the "graph simplification" step.
    """
    import onnx

    window = check_window(model, window)
    if example_batch < 2:
        raise ExportError("example_batch must be >= 2: a batch-1 example fixes the batch dimension of the graph to 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    graph = PixelEmbeddingGraph(model).eval()
    patch = int(model.backbone.patch_size)
    # Resample the positional embedding for this grid now: inside the trace it is then a plain
    # constant instead of a cache write (which torch.export would flag as a mutated attribute).
    model.backbone.positional_embedding(window // patch, window // patch)
    example = torch.randn(example_batch, 3, window, window, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                graph, (example,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"image": {0: batch}}, external_data=False,
                optimize=optimize, verbose=False)
    except Exception as err:  # the exporter raises many types; the first line says what
        first = " ".join(str(err).split())[:400]
        raise ExportError(f"torch.onnx.export (dynamo, opset {OPSET}) failed: {type(err).__name__}: {first}") from err
    proto = program.model_proto
    if optimize:
        proto = fold_large_constants(proto)
    metadata = {**graph_metadata(model, window), GRAPH_ROLE_KEY: "onnx", **(extra_metadata or {})}
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "mgca-export"
    proto.doc_string = ("MGCA pixel embeddings: image (N x 3 x win x win, CLIP-normalised float32) -> "
                        "embeddings (N x C x win/os x win/os, L2-normalised along C)")
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))  # < 2 GiB for every CLIP ViT up to L/14: one self-contained file
    check_graph(path, model, window)
    return path


def fold_large_constants(proto):
    """Constant-fold subgraphs on weights too big for the exporter's default limits.

    The MaskCLIP last block uses `in_proj_weight[2C:]` (the value projection): the exporter keeps
    it as a Slice of the full q/k/v weight, so the MatMul's weight is not a plain initializer and
    int8 quantisation would treat it as an activation. Folding makes it a C x C initializer.
    """
    import onnxscript.optimizer

    limit = 1 << 28
    with _quiet_exporter():
        return onnxscript.optimizer.optimize(proto, input_size_limit=limit, output_size_limit=limit)


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]


def check_graph(path: str | Path, model: nn.Module, window: int) -> None:
    """onnx.checker (full check, with shape inference) plus the contract's input/output names and shapes."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # ValidationError and shape-inference errors
        raise ExportError(f"onnx.checker rejected {path}: {' '.join(str(err).split())[:400]}") from err
    proto = onnx.load(str(path), load_external_data=False)
    inputs = [i for i in proto.graph.input]
    outputs = [o for o in proto.graph.output]
    grid = window // int(model.output_stride)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise ExportError(f"{path} has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}, "
                          f"expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]")
    in_dims, out_dims = _dims(inputs[0]), _dims(outputs[0])
    if not isinstance(in_dims[0], str) or in_dims[1:] != [3, window, window]:
        raise ExportError(f"{path}: input {INPUT_NAME} has shape {in_dims}, expected [batch, 3, {window}, {window}] "
                          "with a dynamic batch")
    if out_dims[1:] != [int(model.embed_dim), grid, grid]:
        raise ExportError(f"{path}: output {OUTPUT_NAME} has shape {out_dims}, expected [batch, "
                          f"{model.embed_dim}, {grid}, {grid}]")
    types = (inputs[0].type.tensor_type.elem_type, outputs[0].type.tensor_type.elem_type)
    if types != (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT):
        raise ExportError(f"{path}: input and output must be float32")


__all__ = ["ExportError", "PixelEmbeddingGraph", "export_onnx", "check_graph", "graph_metadata", "read_metadata",
           "decoder_sha256", "check_window", "OPSET"]
