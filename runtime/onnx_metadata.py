"""The metadata_props of an ONNX file read from its bytes without onnx or protobuf (the lean runtime has neither):
the exporter records the backbone's weight hashes there, so a graph of another CLIP is caught even when the manifest's
sha256 was edited to match it.

ONNX's ModelProto is a protobuf message; metadata_props is its field 14, each entry a message of key (1) and value
(2) strings. Only the top-level fields are walked: the graph (field 7, nearly all the bytes) is skipped by its length.
"""
from __future__ import annotations

METADATA_FIELD, KEY_FIELD, VALUE_FIELD = 14, 1, 2


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes | memoryview):
    """(field number, payload or None) of each field of one message; payloads only for length-delimited ones."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            _, pos = _varint(data, pos)
            yield number, None
        elif kind == 1:
            pos += 8
            yield number, None
        elif kind == 5:
            pos += 4
            yield number, None
        elif kind == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {kind}")


def read_onnx_metadata(data: bytes | memoryview) -> dict[str, str]:
    """metadata_props of the serialized ONNX model `data`; ValueError when the bytes are not a protobuf message."""
    view = memoryview(data)
    out: dict[str, str] = {}
    for number, payload in _fields(view):
        if number != METADATA_FIELD or payload is None:
            continue
        entry = dict(_fields(payload))
        key, value = entry.get(KEY_FIELD), entry.get(VALUE_FIELD)
        if key is not None:
            out[bytes(key).decode("utf-8", "replace")] = bytes(value or b"").decode("utf-8", "replace")
    return out


__all__ = ["read_onnx_metadata"]
