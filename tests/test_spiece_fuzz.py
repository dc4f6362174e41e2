"""The spiece.model reader meets garbage: any byte string, and real model files with bytes changed or cut off.

It must either read a model or raise ValueError naming the file; never another exception (IndexError,
struct.error, a Rust panic from the tokenizers library), never a hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.tokenizer import Tokenizer
from bertkit.tokenizer.spiece_proto import read_model

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("unigram")
    Tokenizer.train([str(CORPUS / "alice_in_wonderland.txt")], kind="unigram", vocab_size=120).save_pretrained(folder)
    return (folder / "spiece.model").read_bytes()


def read_or_refuse(data: bytes, source: str) -> None:
    try:
        read_model(data, source)
    except ValueError as err:
        assert str(err).startswith(f"{source}: not a SentencePiece model file (")


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_are_read_or_refused_with_the_file_named(data):
    read_or_refuse(data, "garbage/spiece.model")


@FUZZ
@given(data=st.data())
def test_a_damaged_real_model_is_read_or_refused(model_bytes, tmp_path, data):
    damaged = bytearray(model_bytes)
    for _ in range(data.draw(st.integers(1, 8), label="changes")):
        position = data.draw(st.integers(0, len(damaged) - 1), label="position")
        damaged[position] = data.draw(st.integers(0, 255), label="byte")
    damaged = damaged[: data.draw(st.integers(0, len(damaged)), label="cut at")]
    read_or_refuse(bytes(damaged), "damaged/spiece.model")
    # and through the loader: a model that parses must load and encode, or be refused as a ValueError
    folder = tmp_path / "tok"
    folder.mkdir(exist_ok=True)
    (folder / "spiece.model").write_bytes(bytes(damaged))
    try:
        tokenizer = Tokenizer.from_pretrained(folder)
    except ValueError as err:
        assert str(folder / "spiece.model") in str(err)
        return
    tokenizer.encode("Alice was beginning to get very tired")


def test_a_damaged_normalisation_table_is_refused_by_name(model_bytes, tmp_path):
    """The case the fuzzing found: a table the tokenizers library cannot parse raised its bare Exception."""
    table = read_model(model_bytes, "spiece.model").precompiled_charsmap
    damaged = bytearray(model_bytes)
    damaged[model_bytes.find(table) + 3] = 0xFF  # the table's size header
    (tmp_path / "spiece.model").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"spiece.model: not a SentencePiece model file \(.*Precompiled"):
        Tokenizer.from_pretrained(tmp_path)
