"""Model shape, initialisation and parity with the reference implementation."""

import pytest
import torch
import transformers

from bertkit import BertConfig, BertForPreTraining, BertForQuestionAnswering, BertModel


def test_parameter_counts_equal_the_reference():
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        assert sum(p.numel() for p in BertModel(BertConfig.preset("base")).parameters()) == 109_482_240
        assert sum(p.numel() for p in BertModel(BertConfig.preset("large")).parameters()) == 335_141_888


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    model = BertModel(BertConfig.preset("mini"))
    fc1 = model.layers[0].ffn.fc1
    assert abs(fc1.weight.std().item() - 0.02) < 0.001
    assert torch.all(fc1.bias == 0)
    assert torch.all(model.layers[0].norm1.weight == 1) and torch.all(model.layers[0].norm1.bias == 0)


@pytest.fixture(scope="module")
def minilm_pair(minilm_dir):
    ours = BertModel.from_pretrained(minilm_dir).eval()
    ref = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager").eval()
    return ours, ref


def _compare(ours, ref, **inputs):
    with torch.inference_mode():
        a = ours(**inputs)
        b = ref(**inputs)
    valid = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool()
    return (
        (a.last_hidden_state - b.last_hidden_state)[valid].abs().max().item(),
        (a.pooler_output - b.pooler_output).abs().max().item(),
    )


def test_minilm_matches_reference_on_single_sentence(minilm_pair):
    ours, ref = minilm_pair
    ids = torch.tensor([[101, 1996, 3007, 1997, 2605, 2003, 3000, 1012, 102]])
    hidden_err, pooled_err = _compare(ours, ref, input_ids=ids)
    assert hidden_err < 1e-5 and pooled_err < 1e-5


def test_minilm_matches_reference_on_padded_pairs_with_token_types(minilm_pair):
    ours, ref = minilm_pair
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (4, 33), generator=gen)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    for row, (length, split) in enumerate([(33, 20), (25, 10), (12, 6), (7, 3)]):
        mask[row, length:] = 0
        types[row, split:length] = 1
    hidden_err, pooled_err = _compare(ours, ref, input_ids=ids, token_type_ids=types, attention_mask=mask)
    assert hidden_err < 1e-5 and pooled_err < 1e-5


def test_attentions_and_hidden_states_do_not_change_the_numbers(minilm_pair):
    ours, ref = minilm_pair
    ids = torch.tensor([[101, 7592, 2088, 999, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        fast = ours(ids, attention_mask=mask)
        full = ours(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        theirs = ref(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert torch.allclose(fast.last_hidden_state, full.last_hidden_state, atol=1e-5)
    assert len(full.attentions) == 6 and full.attentions[0].shape == (1, 12, 7, 7)
    assert len(full.hidden_states) == 7
    real = mask[0].bool()  # rows of padded queries carry no meaning in either implementation
    assert torch.allclose(full.attentions[3][:, :, real], theirs.attentions[3][:, :, real], atol=1e-5)
    assert torch.allclose(full.attentions[0].sum(-1), torch.ones(1, 12, 7))


def _unusual_config():
    return BertConfig(vocab_size=211, hidden_size=96, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=200, type_vocab_size=3, max_position_embeddings=64, hidden_act="gelu")


def test_pretraining_heads_match_reference_on_unusual_config(tmp_path):
    torch.manual_seed(1)
    ref_config = transformers.BertConfig(**_unusual_config().to_dict())
    ref = transformers.BertForPreTraining(ref_config).eval()
    ref.save_pretrained(tmp_path)
    ours = BertForPreTraining.from_pretrained(tmp_path).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 211, (3, 20), generator=gen)
    types = torch.randint(0, 3, (3, 20), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    with torch.inference_mode():
        a = ours(ids, types, mask)
        b = ref(input_ids=ids, token_type_ids=types, attention_mask=mask)
    valid = mask.bool()
    assert (a.mlm_logits - b.prediction_logits)[valid].abs().max() < 1e-5
    assert (a.nsp_logits - b.seq_relationship_logits).abs().max() < 1e-5


def test_sparse_mlm_logits_equal_dense_logits_at_labelled_positions():
    torch.manual_seed(0)
    model = BertForPreTraining(_unusual_config()).eval()
    ids = torch.randint(5, 211, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 7] = 17, 42
    with torch.inference_mode():
        dense = model(ids).mlm_logits
        sparse = model(ids, mlm_labels=labels, nsp_labels=torch.tensor([0, 1]))
    assert sparse.mlm_logits.shape == (2, 211)
    assert torch.allclose(sparse.mlm_logits, dense[labels != -100], atol=1e-5)
    expected = torch.nn.functional.cross_entropy(dense[labels != -100], torch.tensor([17, 42]))
    assert torch.allclose(sparse.mlm_loss, expected, atol=1e-5)
    assert torch.allclose(sparse.loss, sparse.mlm_loss + sparse.nsp_loss)


def test_input_longer_than_positions_raises():
    model = BertModel(BertConfig.preset("tiny", max_position_embeddings=16))
    with pytest.raises(ValueError, match="at most 16"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_decoder_is_tied_to_token_embeddings():
    model = BertForPreTraining(BertConfig.preset("tiny", vocab_size=100))
    names = [n for n, _ in model.named_parameters()]
    assert not any("decoder" in n for n in names)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in model.bert.parameters()) + (
        128 * 128 + 128 + 2 * 128 + 100 + 2 * 128 + 2
    )


def test_span_loss_ignores_padding():
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig.preset("tiny")).eval()
    ids = torch.randint(5, 100, (1, 10))
    targets = {"start_positions": torch.tensor([3]), "end_positions": torch.tensor([5])}
    padded = torch.cat([ids, torch.zeros(1, 30, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 30)], dim=1).long()
    with torch.inference_mode():
        alone = model(ids, attention_mask=torch.ones_like(ids), **targets)
        with_padding = model(padded, attention_mask=mask, **targets)
        # the padded positions' logits are there, and would change an unmasked cross-entropy
        unmasked = torch.nn.functional.cross_entropy(with_padding.start_logits, targets["start_positions"])
    torch.testing.assert_close(with_padding.start_logits[:, :10], alone.start_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_padding.loss, alone.loss, atol=1e-5, rtol=0)
    assert abs(unmasked - torch.nn.functional.cross_entropy(alone.start_logits, targets["start_positions"])) > 0.1
