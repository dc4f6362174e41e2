"""The tokenizers of the BERT family behind one API: WordPiece (BERT, DistilBERT), byte-level BPE (RoBERTa) and
SentencePiece unigram (ALBERT). ``Tokenizer.from_pretrained(dir)`` picks the scheme from the files present."""

from bertkit.tokenizer.base import Encoding, Tokenizer, Truncation
from bertkit.tokenizer.bpe import ByteLevelBPETokenizer
from bertkit.tokenizer.unigram import SentencePieceTokenizer
from bertkit.tokenizer.wordpiece import _FAST_BLOCKS as _FAST_BLOCKS  # the fast path's proof lives in the tests
from bertkit.tokenizer.wordpiece import _FAST_TEXT as _FAST_TEXT
from bertkit.tokenizer.wordpiece import WordPieceTokenizer

__all__ = ["ByteLevelBPETokenizer", "Encoding", "SentencePieceTokenizer", "Tokenizer", "Truncation",
           "WordPieceTokenizer"]
