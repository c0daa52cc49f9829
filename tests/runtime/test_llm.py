"""The llama.cpp wrapper: greedy determinism, ECG-id masking, stop ids, context checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagecg.bundle import Bundle, load_bundle
from diagecg.errors import InferenceError
from diagecg.runtime.llm import LlamaModel, load_text_tokenizer


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path) -> Bundle:
    return load_bundle(tiny_bundle, check_models=False)


@pytest.fixture(scope="module")
def llm(bundle: Bundle) -> LlamaModel:
    m = LlamaModel(
        bundle.gguf_path("q8_0"),
        vocab=bundle.vocab,
        n_ctx=bundle.generation.n_ctx,
        tokenizer=load_text_tokenizer(bundle.tokenizer_path),
        threads=1,
    )
    yield m
    m.close()


@pytest.fixture(scope="module")
def prompt(bundle: Bundle, llm: LlamaModel) -> list[int]:
    codes = np.random.default_rng(1).integers(0, bundle.vocab.n_codes, 63)
    v = bundle.vocab
    question = llm.encode_text("Question: sinus rhythm?")
    return [v.start_id, *(int(c) + v.offset for c in codes), v.end_id, *question]


def _is_ecg(bundle: Bundle, i: int) -> bool:
    v = bundle.vocab
    return v.offset <= i < v.offset + v.n_codes or i in (v.start_id, v.end_id)


def test_greedy_is_deterministic_and_never_emits_ecg_ids(
    bundle: Bundle, llm: LlamaModel, prompt: list[int]
) -> None:
    a = llm.generate(prompt, max_new_tokens=12)
    b = llm.generate(prompt, max_new_tokens=12)
    assert a.token_ids == b.token_ids and a.text == b.text
    assert len(a.token_ids) == 12 and a.stop_reason == "length" and a.n_prompt_tokens == len(prompt)
    assert not any(_is_ecg(bundle, i) for i in a.token_ids)
    # the fixture model prefers ECG ids when unmasked, so the mask above really acted
    llm._llm.reset()
    assert _is_ecg(bundle, int(np.argmax(llm._eval(prompt))))


def test_stop_id_ends_the_answer_and_is_not_part_of_it(
    bundle: Bundle, llm: LlamaModel, prompt: list[int]
) -> None:
    first = llm.generate(prompt, max_new_tokens=3).token_ids
    stopper = LlamaModel(
        bundle.gguf_path("q8_0"),
        vocab=bundle.vocab,
        n_ctx=bundle.generation.n_ctx,
        tokenizer=llm.tokenizer,
        stop_ids=[first[1]],
        threads=1,
    )
    try:
        g = stopper.generate(prompt, max_new_tokens=12)
    finally:
        stopper.close()
    assert g.token_ids == first[:1] and g.stop_reason == "eos"


def test_prompt_longer_than_context_is_refused_with_numbers(llm: LlamaModel) -> None:
    with pytest.raises(InferenceError, match=r"300 tokens.*n_ctx=256"):
        llm.generate([5] * 300, max_new_tokens=4)


def test_token_budget_is_cut_to_the_context_with_a_warning(llm: LlamaModel) -> None:
    g = llm.generate([5] * 250, max_new_tokens=12)
    assert len(g.token_ids) + 250 <= 256 and any("cut to 6" in w for w in g.warnings)


def test_prompt_id_outside_vocabulary_is_refused(llm: LlamaModel) -> None:
    with pytest.raises(InferenceError, match="outside the vocabulary"):
        llm.generate([1, llm.n_vocab + 3], max_new_tokens=2)


def test_sampling_is_seeded(bundle: Bundle, llm: LlamaModel, prompt: list[int]) -> None:
    kw = dict(max_new_tokens=8, temperature=1.0, top_k=50, top_p=0.95)
    a, b = llm.generate(prompt, seed=3, **kw), llm.generate(prompt, seed=3, **kw)
    assert a.token_ids == b.token_ids
    assert not any(_is_ecg(bundle, i) for i in a.token_ids)


def test_llama_cpp_vocabulary_codes_like_the_tokenizer_file(
    bundle: Bundle, llm: LlamaModel, prompt: list[int]
) -> None:
    # bundles without tokenizer.json fall back to the GGUF's own tokenizer: same ids, same answer
    own = LlamaModel(
        bundle.gguf_path("q8_0"), vocab=bundle.vocab, n_ctx=bundle.generation.n_ctx, tokenizer=None, threads=1
    )
    try:
        text = "Does this ECG show <ecg_0001> atrial fibrillation?"
        assert own.encode_text(text) == llm.encode_text(text)
        assert own.generate(prompt, max_new_tokens=6).text == llm.generate(prompt, max_new_tokens=6).text
    finally:
        own.close()


def test_prefix_reuse_gives_the_fresh_answer_and_counts_what_it_kept(
    bundle: Bundle, llm: LlamaModel, prompt: list[int]
) -> None:
    fresh = LlamaModel(
        bundle.gguf_path("q8_0"),
        vocab=bundle.vocab,
        n_ctx=bundle.generation.n_ctx,
        tokenizer=llm.tokenizer,
        threads=1,
        reuse_prefix=False,
    )
    try:
        ecg = prompt[:65]  # <ecg> 63 codes </ecg>
        other_ecg = [
            ecg[0],
            *(i + 1 if i + 1 < bundle.vocab.offset + bundle.vocab.n_codes else i - 1 for i in ecg[1:-1]),
            ecg[-1],
        ]
        prompts = [
            prompt,
            ecg + llm.encode_text("Question: atrial fibrillation?"),  # same ECG, other question
            prompt,  # the first prompt again, after another one
            prompt[:-1],  # a strict prefix of the previous prompt
            other_ecg + prompt[65:],
        ]  # another ECG: differs from the second token

        def shared(a: list[int], b: list[int]) -> int:
            n = min(len(a), len(b))
            return next((i for i in range(n) if a[i] != b[i]), n)

        reused = []
        for i, p in enumerate(prompts):
            a = llm.generate(p, max_new_tokens=6)
            b = fresh.generate(p, max_new_tokens=6)
            assert a.token_ids == b.token_ids and b.n_reused_tokens == 0
            if i:  # at most the prompt minus its last token, whose logits are needed
                assert a.n_reused_tokens == min(shared(prompts[i - 1], p), len(p) - 1)
            reused.append(a.n_reused_tokens)
        assert reused[1] >= 65 and reused[3] == len(prompt) - 2 and reused[4] == 1
        # the logits after a reused prefix are those of a fresh evaluation (Q8_0: bitwise)
        llm.generate(prompts[1], max_new_tokens=2)
        logits, n_reused = llm._prefill(prompt)
        fresh._llm.reset()
        assert n_reused >= 65 and np.array_equal(logits, fresh._eval(prompt))
    finally:
        fresh.close()


def test_option_probabilities_are_teacher_forced_sequence_likelihoods(
    llm: LlamaModel, prompt: list[int]
) -> None:
    options = [llm.encode_text(" yes"), llm.encode_text(" no"), llm.encode_text(" not sure")]
    options = [[*o, next(iter(llm.stop_ids))] for o in options]
    p = llm.option_probabilities(prompt, options)
    assert p.shape == (3,) and p.sum() == pytest.approx(1.0) and (p > 0).all()

    def logp(option: list[int]) -> float:  # a fresh evaluation per token, no reuse
        total = 0.0
        for j, tok in enumerate(option):
            llm._llm.reset()
            x = llm._eval(prompt + option[:j]).astype(np.float64)
            total += x[tok] - x.max() - np.log(np.exp(x - x.max()).sum())
        return total

    lp = np.array([logp(o) for o in options])
    want = np.exp(lp - lp.max())
    np.testing.assert_allclose(p, want / want.sum(), rtol=1e-3)
    # after other work the context holds another sequence: the answer does not depend on it
    llm.generate(prompt[:-2], max_new_tokens=3)
    np.testing.assert_allclose(llm.option_probabilities(prompt, options), p, rtol=1e-5)
    with pytest.raises(InferenceError, match="non-empty"):
        llm.option_probabilities(prompt, [[], options[0]])


def test_options_are_scored_side_by_side_in_groups_and_leave_no_cells(
    llm: LlamaModel, prompt: list[int]
) -> None:
    """Every option's tokens go to one llama_decode as its own sequence sharing the prompt's cells; more
    options than the context has sequences (or batch room) are split into groups with the same result."""
    import llama_cpp

    words = [" yes", " no", " not sure", " sinus rhythm", " atrial fibrillation", " left bundle branch block"]
    options = [[*llm.encode_text(w), next(iter(llm.stop_ids))] for w in words]
    assert llm.n_sequences > len(options)
    together = llm.option_probabilities(prompt, options)
    memory = llama_cpp.llama_get_memory(llm._llm.ctx)
    for seq in range(1, llm.n_sequences):  # the options' sequences are gone: only the prompt's is left
        assert llama_cpp.llama_memory_seq_pos_max(memory, seq) == -1
    assert llama_cpp.llama_memory_seq_pos_max(memory, 0) == len(prompt) - 1
    groups = [len(g) for g in llm._option_groups([(k, o) for k, o in enumerate(options)])]
    assert groups == [len(options)]
    n_sequences, n_batch = llm.n_sequences, llm.n_batch
    try:
        longest = max(len(o) for o in options) - 1  # tokens an option puts in the batch
        llm.n_sequences, llm.n_batch = 3, longest  # at most two options per group, fewer when long
        sizes = [len(g) for g in llm._option_groups(list(enumerate(options)))]
        assert max(sizes) <= 2 and len(sizes) >= 3 and sum(sizes) == len(options)
        np.testing.assert_allclose(llm.option_probabilities(prompt, options), together, rtol=1e-5)
    finally:
        llm.n_sequences, llm.n_batch = n_sequences, n_batch
