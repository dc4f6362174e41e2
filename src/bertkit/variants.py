"""The one table of model variants: what sets RoBERTa, DistilBERT and ALBERT apart from BERT.

Every module that behaves differently per variant reads its row here instead of comparing ``model_type``
strings, so a new variant (XLM, FlauBERT, XLNet) is a new row plus the code that is genuinely new. What the
rows say: the class-name prefix of the reference implementation (``RobertaForMaskedLM`` ...), the pretraining
sentence objective, the pooler and head details, the tokenizer scheme, which teachers a student of the variant
can be distilled from, the published defaults of a fresh model, and how its ``config.json`` is spelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEAD_TASKS = ("sequence", "token", "span", "sentence")


@dataclass(frozen=True)
class Variant:
    """One member of the BERT family.

    head_dropout: per head task (``HEAD_TASKS``), the ``config.json`` key holding the dropout before the output
        layer (None: no key) and its default when the key is absent (None: the hidden dropout).
    presets: what ``BertConfig.preset`` changes from BERT's defaults (the variant's published settings).
    file_defaults: the reference config class's defaults where they differ from BERT's, for keys a file omits.
    file_keys: the variant's own ``config.json`` spelling of shared fields (ours -> theirs).
    fixed_fields: fields the variant's ``config.json`` cannot express, with their one possible value.
    """

    model_type: str
    class_prefix: str
    sentence_task: str | None  # "nsp", "sop", or None (masked LM alone)
    tokenizer_kind: str  # "wordpiece", "bpe" or "unigram"
    teachers: tuple[str, ...] = ()  # model types a student of this variant is distilled from; () = no student
    has_pooler: bool = True
    pooler_activation: str = "tanh"
    pooler_dropout: bool = False  # dropout on the first token before the pooler's dense layer (RoBERTa)
    lm_activation: str | None = None  # the MLM transform's activation when not the encoder's (RoBERTa: gelu)
    positions_after_padding: bool = False  # position ids start at pad_token_id + 1 (RoBERTa)
    shares_layers: bool = False  # factorised embeddings and groups of shared layers (ALBERT)
    halves_preset_layers: bool = False  # presets keep half the layers of the BERT size of the same name
    head_dropout: dict[str, tuple[str | None, float | None]] = field(default_factory=dict)
    presets: dict[str, Any] = field(default_factory=dict)
    file_defaults: dict[str, Any] = field(default_factory=dict)
    file_keys: dict[str, str] = field(default_factory=dict)
    fixed_fields: dict[str, Any] = field(default_factory=dict)

    def head_dropout_rate(self, task: str, extra: dict[str, Any], hidden: float) -> float:
        """Dropout before a head's output layer: the variant's key in ``extra`` (config.json), else its default,
        else ``hidden``."""
        if task not in HEAD_TASKS:
            raise ValueError(f"unknown head task {task!r}")
        key, default = self.head_dropout[task]
        value = extra.get(key, default) if key is not None else default
        return float(hidden if value is None else value)


_CLASSIFIER = ("classifier_dropout", None)
_NO_DROPOUT = (None, 0.0)
_ALBERT_CLASSIFIER = ("classifier_dropout_prob", 0.1)

VARIANTS: dict[str, Variant] = {
    v.model_type: v
    for v in (
        Variant(
            "bert", "Bert", sentence_task="nsp", tokenizer_kind="wordpiece", teachers=("bert",),
            head_dropout={"sequence": _CLASSIFIER, "token": _CLASSIFIER, "span": _NO_DROPOUT,
                          "sentence": _NO_DROPOUT},
        ),
        Variant(
            "roberta", "Roberta", sentence_task=None, tokenizer_kind="bpe", teachers=("roberta",),
            pooler_dropout=True, lm_activation="gelu", positions_after_padding=True,
            head_dropout={"sequence": _CLASSIFIER, "token": _CLASSIFIER, "span": _NO_DROPOUT,
                          "sentence": _NO_DROPOUT},
            presets=dict(vocab_size=50265, pad_token_id=1, type_vocab_size=1, max_position_embeddings=514,
                         layer_norm_eps=1e-5),
            file_defaults=dict(vocab_size=50265, pad_token_id=1),
        ),
        Variant(
            "distilbert", "DistilBert", sentence_task=None, tokenizer_kind="wordpiece",
            teachers=("bert", "distilbert"), has_pooler=False, pooler_activation="relu", halves_preset_layers=True,
            head_dropout={"sequence": ("seq_classif_dropout", 0.2), "token": (None, None),
                          "span": ("qa_dropout", 0.1), "sentence": _NO_DROPOUT},
            presets=dict(type_vocab_size=0),
            file_defaults=dict(num_hidden_layers=6),
            file_keys={
                "hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                "intermediate_size": "hidden_dim", "hidden_dropout_prob": "dropout",
                "attention_probs_dropout_prob": "attention_dropout", "hidden_act": "activation",
            },
            fixed_fields={"type_vocab_size": 0, "layer_norm_eps": 1e-12},
        ),
        Variant(
            "albert", "Albert", sentence_task="sop", tokenizer_kind="unigram", shares_layers=True,
            head_dropout={"sequence": _ALBERT_CLASSIFIER, "token": _ALBERT_CLASSIFIER, "span": _NO_DROPOUT,
                          "sentence": _ALBERT_CLASSIFIER},
            presets=dict(vocab_size=30000, embedding_size=128, hidden_act="gelu_new"),
            file_defaults=dict(
                vocab_size=30000, embedding_size=128, hidden_size=4096, num_attention_heads=64,
                intermediate_size=16384, hidden_act="gelu_new", hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            ),
        ),
    )
}  # fmt: skip

MODEL_TYPES = tuple(VARIANTS)


def class_variant(class_name: str) -> tuple[Variant, str] | None:
    """The variant a reference class name belongs to and the rest of the name, or None.

    ``"RobertaForTokenClassification"`` -> (roberta, ``"ForTokenClassification"``); the longest prefix wins, so
    ``DistilBert...`` is not read as ``Bert``.
    """
    for variant in sorted(VARIANTS.values(), key=lambda v: -len(v.class_prefix)):
        if class_name.startswith(variant.class_prefix):
            return variant, class_name[len(variant.class_prefix):]
    return None
