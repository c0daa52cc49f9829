"""Summary-token embeddings start from their findings' words (extend_vocab.init_summary_embeddings)."""

from __future__ import annotations

import torch

from diagecg.config import VocabConfig
from diagecg.training.extend_vocab import init_summary_embeddings


def test_summary_rows_are_the_finding_words_plus_a_level_direction():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(40, 8)

    class Model:
        def get_input_embeddings(self) -> torch.nn.Embedding:
            return emb

    words = {"atrial": 3, "fibrillation": 4, "normal": 5, "ecg": 6}
    vocab = VocabConfig(
        n_codes=4 + 2 * 3, offset=20, start_id=30, end_id=31, vocab_size=40, base_vocab_size=20
    )
    text_before = emb.weight[:20].clone()
    init_summary_embeddings(
        Model(),
        vocab,
        frame_codes=4,
        levels=3,
        names=["atrial fibrillation", "normal ecg"],
        encode_text=lambda t: [words[w] for w in t.split()],
        seed=0,
    )
    w = emb.weight.detach()
    assert torch.equal(w[:20], text_before)  # text rows untouched
    for f, ids in enumerate(([3, 4], [5, 6])):
        rows = w[20 + 4 + 3 * f : 20 + 4 + 3 * f + 3]  # levels 0, 1, 2 of finding f
        base = text_before[ids].mean(0)
        torch.testing.assert_close(rows[1], base)  # the middle level is the words themselves
        torch.testing.assert_close(rows[0] + rows[2], 2 * base)  # the extremes are symmetric around them
        direction = rows[2] - rows[1]
        torch.testing.assert_close(direction.norm(), text_before.norm(dim=-1).median())
    torch.testing.assert_close(w[24 + 2] - w[24 + 1], w[27 + 2] - w[27 + 1])  # one level direction for all
