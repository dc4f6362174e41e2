"""Read what tokenisation needs from a SentencePiece model file (spiece.model, a protobuf ModelProto).

Of sentencepiece_model.proto only a few fields matter: ModelProto.pieces (1), each with piece (1), score (2) and
type (3); TrainerSpec (2) model_type (3) and unk_id (40); NormalizerSpec (3) precompiled_charsmap (2), the
normalisation table (nmt_nfkc for ALBERT). Reading the protobuf wire format directly keeps loading free of the
protobuf package; unknown fields are skipped, as protobuf itself does.

Why not through the sentencepiece library (a dependency, used for training): checked on sentencepiece 0.2.x, its
``SentencePieceProcessor`` gives the pieces, their scores and four of the piece types (control, unknown, unused,
byte), but neither the user-defined type, nor the model type, nor the normalisation table that the `tokenizers`
pipeline needs (``normalizers.Precompiled``). Those are reachable only through ``sentencepiece_model_pb2``, which
imports the protobuf package, not a dependency of bertkit. This reader is fuzzed in tests/test_spiece_fuzz.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece.Type
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}  # TrainerSpec.ModelType
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5  # wire types


@dataclass(frozen=True)
class SentencePieceModel:
    """The pieces of a model with their scores (log probabilities) and types, and its normalisation table."""

    pieces: list[str]
    scores: list[float]
    types: list[int]
    model_type: str
    unk_id: int
    precompiled_charsmap: bytes


class _Corrupt(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Corrupt(f"a number runs past its message at byte {pos}")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message; value is an int or the raw bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
            yield number, wire, value
            continue
        if wire == _BYTES:
            size, pos = _varint(data, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
        else:
            raise _Corrupt(f"field {number} has wire type {wire}, which this format does not use")
        if pos + size > len(data):
            raise _Corrupt(f"field {number} runs past the end of its message")
        yield number, wire, data[pos:pos + size]
        pos += size


def _expect(number: int, wire: int, value: int | bytes, expected: int) -> None:
    if wire != expected:
        raise _Corrupt(f"field {number} has wire type {wire}, expected {expected}")


def _int32(value: int) -> int:
    """protobuf writes a negative int32 as a 64-bit two's complement varint."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _piece(data: bytes) -> tuple[str, float, int]:
    piece, score, kind = None, 0.0, NORMAL
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(number, wire, value, _BYTES)
            try:
                piece = value.decode("utf-8")  # type: ignore[union-attr]
            except UnicodeDecodeError:
                raise _Corrupt("a piece is not valid UTF-8") from None
        elif number == 2:
            _expect(number, wire, value, _FIXED32)
            score = struct.unpack("<f", value)[0]  # type: ignore[arg-type]
        elif number == 3:
            _expect(number, wire, value, _VARINT)
            kind = value  # type: ignore[assignment]
    if piece is None:
        raise _Corrupt("a piece has no text")
    return piece, score, kind


def _parse(data: bytes) -> SentencePieceModel:
    pieces: list[tuple[str, float, int]] = []
    model_type, unk_id, charsmap = 1, 0, b""  # the schema's defaults
    for number, wire, value in _fields(data):
        if number == 1:
            _expect(number, wire, value, _BYTES)
            pieces.append(_piece(value))  # type: ignore[arg-type]
        elif number == 2:
            _expect(number, wire, value, _BYTES)
            for sub, sub_wire, sub_value in _fields(value):  # type: ignore[arg-type]
                if sub == 3:
                    _expect(sub, sub_wire, sub_value, _VARINT)
                    model_type = sub_value  # type: ignore[assignment]
                elif sub == 40:
                    _expect(sub, sub_wire, sub_value, _VARINT)
                    unk_id = _int32(sub_value)  # type: ignore[arg-type]
        elif number == 3:
            _expect(number, wire, value, _BYTES)
            for sub, sub_wire, sub_value in _fields(value):  # type: ignore[arg-type]
                if sub == 2:
                    _expect(sub, sub_wire, sub_value, _BYTES)
                    charsmap = sub_value  # type: ignore[assignment]
    if not pieces:
        raise _Corrupt("it holds no pieces")
    if not 0 <= unk_id < len(pieces):
        raise _Corrupt(f"unk_id {unk_id} is outside its {len(pieces)} pieces")
    return SentencePieceModel([p for p, _, _ in pieces], [s for _, s, _ in pieces], [t for _, _, t in pieces],
                              MODEL_TYPES.get(model_type, f"type {model_type}"), unk_id, bytes(charsmap))


def read_model(data: bytes, source: str) -> SentencePieceModel:
    """Parse a serialised ModelProto; a file that is not one is an error naming `source` and what went wrong."""
    try:
        return _parse(data)
    except _Corrupt as err:
        raise ValueError(f"{source}: not a SentencePiece model file ({err})") from None
