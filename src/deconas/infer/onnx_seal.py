"""The seal every ONNX graph deconas exports ends in: the SHA-256 of all the bytes before it, so
that a graph damaged in any byte (a weight included, which ONNX Runtime would run silently) is
known before it is used. Nothing here imports torch or onnx."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# The seal is the graph's last metadata entry, appended as protobuf bytes: metadata_props is
# ModelProto field 14, each entry a StringStringEntryProto (key = field 1, value = field 2), and
# a repeated field may continue at the end of a message.
SEAL_KEY = "content_sha256"
_SEAL_PREFIX = bytes([0x72, 2 + len(SEAL_KEY) + 2 + 64, 0x0A, len(SEAL_KEY)]) + SEAL_KEY.encode() + bytes([0x12, 64])
SEAL_LEN = len(_SEAL_PREFIX) + 64


def seal(graph: bytes) -> bytes:
    """``graph`` (a serialized ONNX model) with its seal appended."""
    return graph + _SEAL_PREFIX + hashlib.sha256(graph).hexdigest().encode()


def is_sealed(path: Path) -> bool:
    """Whether the file at ``path`` ends in the seal of the bytes before it (read in pieces:
    memory stays small whatever the file's size)."""
    try:
        with open(path, "rb") as f:
            body = os.fstat(f.fileno()).st_size - SEAL_LEN
            if body <= 0:
                return False
            h, left = hashlib.sha256(), body
            while left:
                piece = f.read(min(left, 1 << 20))
                if not piece:
                    return False
                h.update(piece)
                left -= len(piece)
            return f.read() == _SEAL_PREFIX + h.hexdigest().encode()
    except OSError:
        return False
