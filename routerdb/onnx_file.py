"""What an ONNX file in a bundle may contain, checked before ONNX Runtime sees a byte.

A bundle's `model.onnx` must be one self-contained protobuf `ModelProto`: every weight inside the
file. ONNX lets a tensor point at "external data" by a file path; in a bundle from elsewhere such a
path could name any file on the machine, so a graph with external data is refused here (recent ONNX
Runtime versions refuse paths that leave the model's directory too; this check does not depend on
the version installed). The walk reads only the protobuf wire format (no `onnx` package, no
torch): field numbers below are those of `onnx/onnx.proto3`.
"""

from __future__ import annotations

from collections.abc import Iterator

MAX_DEPTH = 32  # graphs nested in If / Loop / Scan attributes; real models use a few levels


class OnnxFileError(ValueError):
    """Bytes that are not a self-contained ONNX model."""


# message -> {field number: message of that field}; fields not listed are skipped unread.
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise OnnxFileError("truncated or malformed protobuf (a number runs past the end)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as views."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxFileError("malformed protobuf (field number 0)")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise OnnxFileError("truncated protobuf (a field runs past the end of the file)")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(buf):
                raise OnnxFileError("truncated protobuf (a field runs past the end of the file)")
            value = 0
        else:
            raise OnnxFileError(f"malformed protobuf (wire type {wire})")
        yield number, wire, value


def _walk(buf: memoryview, kind: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise OnnxFileError(f"graphs nested more than {MAX_DEPTH} deep")
    children = _CHILDREN[kind]
    for number, wire, value in _fields(buf):
        if kind == "tensor" and (number == _TENSOR_EXTERNAL_DATA
                                 or (number == _TENSOR_DATA_LOCATION and value == _EXTERNAL)):
            raise OnnxFileError("the graph keeps tensor data in external files; a bundle's model.onnx "
                                "must hold all of its weights itself")
        child = children.get(number)
        if child is not None:
            if wire != 2:
                raise OnnxFileError(f"malformed ONNX ({kind} field {number} has wire type {wire})")
            _walk(value, child, depth + 1)


def check_self_contained(data: bytes) -> None:
    """Raise OnnxFileError unless `data` is an ONNX ModelProto with a graph and no external data."""
    buf = memoryview(data)
    seen = {number for number, _, _ in _fields(buf)}
    if not {1, 7} <= seen:  # ir_version and graph
        raise OnnxFileError("not an ONNX model (no ir_version or no graph)")
    _walk(buf, "model", 0)
