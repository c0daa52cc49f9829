"""A random-weight instruct checkpoint of a realistic LLM size, for timing ``bench/runtime.py`` at scale.

The shipped demonstration LLM has 4.5M parameters, so the benchmark on it measures fixed costs
(ECG encoder, Python overhead) as much as the LLM. This builds the same kind of checkpoint as
``diagecg train instruct`` writes, with the demo checkpoint's ECG tokenizer, text tokenizer, vocab,
prompt and folds, but a Llama of the size asked for (random weights, ``initializer_range`` 0.02) and
a random LoRA adapter on its attention projections. Its answers are meaningless: use it for
latency and memory, and read agreement only as "the engines compute the same function".

    python bench/scale_model.py --like runs/demo/instruct --out runs/scale --hidden 768 --layers 12
    diagecg export --checkpoint runs/scale/instruct --out runs/scale/bundle --quant q8_0,q4_k_m \\
        --set min_top1={} --set data_dir=../shared/data
    python bench/runtime.py --checkpoint runs/scale/instruct --bundle runs/scale/bundle \\
        --data ../shared/data --n-records 4 --max-questions 20 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path


def build(
    like: Path,
    out: Path,
    *,
    hidden: int,
    layers: int,
    intermediate: int,
    heads: int,
    max_new_tokens: int,
    lora_r: int,
    seed: int,
) -> Path:
    """Write ``out/base`` (the random Llama) and ``out/instruct`` (its LoRA checkpoint); returns the
    latter."""
    import peft
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from diagecg.nn.llm_checkpoint import BaseModelRef, load_llm_checkpoint, save_llm_checkpoint

    src, hf_tok, meta, paths = load_llm_checkpoint(like, merge=True)
    c = src.config
    cfg = LlamaConfig(
        vocab_size=meta.vocab.vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max(c.max_position_embeddings, meta.generation.n_ctx),
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=c.rms_norm_eps,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    base_dir = out / "base"
    model.save_pretrained(base_dir)
    hf_tok.save_pretrained(base_dir)
    lora = peft.LoraConfig(
        r=lora_r,
        lora_alpha=2 * lora_r,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )  # random A and B: merging really changes the weights
    meta = dataclasses.replace(
        meta,
        base_model=BaseModelRef(
            path=str(base_dir.resolve()),
            model_type="llama",
            name=f"random Llama, {n_params / 1e6:.0f}M parameters",
        ),
        generation=dataclasses.replace(meta.generation, max_new_tokens=max_new_tokens),
    )
    ckpt = save_llm_checkpoint(
        out / "instruct",
        peft.get_peft_model(model, lora),
        hf_tok,
        meta,
        paths.ecg_tokenizer_dir,
        copy_base=False,
    )
    print(
        f"{ckpt}: random Llama {layers} x {hidden} (ffn {intermediate}), {n_params / 1e6:.1f}M parameters, "
        f"max_new_tokens {max_new_tokens}"
    )
    return ckpt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--like", type=Path, required=True, help="instruct checkpoint whose tokenizers and configs to reuse"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--hidden",
        type=int,
        default=768,
        help="a multiple of 32 (Q8_0/Q4_0 rows); of 256 for the K-quants (SmolLM2: 576)",
    )
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=2048, help="a multiple of 32 (of 256 for K-quants)")
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--max-new-tokens", type=int, default=6, help="answer budget (random weights never stop)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    for name in ("hidden", "intermediate"):
        if getattr(a, name) % 32:
            p.error(f"--{name} must be a multiple of 32 so Q8_0 and Q4_0 apply (256 for the K-quants)")
    if a.hidden % a.heads:
        p.error("--hidden must be a multiple of --heads")
    from diagecg.errors import DiagEcgError

    try:
        build(
            a.like,
            a.out,
            hidden=a.hidden,
            layers=a.layers,
            intermediate=a.intermediate,
            heads=a.heads,
            max_new_tokens=a.max_new_tokens,
            lora_r=a.lora_r,
            seed=a.seed,
        )
    except (DiagEcgError, FileNotFoundError) as e:  # each names the file or field at fault
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
