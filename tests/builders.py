"""Builders shared by several test files: tiny random ECG tokenizers (stage 1, with or without a
diagnostic summary head), byte-level BPE text tokenizers, and tiny Llamas with the ECG tokens added.
Everything is built in-process; nothing is downloaded. Heavy libraries are imported inside the
builders, so importing this module is cheap.

Imported as ``from builders import ...``: pytest puts ``tests/`` on ``sys.path`` for its conftest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig, VocabConfig
from diagecg.constants import ECG_END_TOKEN, ECG_START_TOKEN, ECG_TOKEN_CACHE, ECG_TOKEN_FORMAT, ManifestKey
from diagecg.features import FEATURE_NAMES

N_CODES = 16  # FSQ levels (4, 4)
N_FRAMES = 63  # ECG tokens per 100 Hz record (1000 samples / 16)
# the summary head of the tiny tokenizers that have one: 3 summary tokens, 3 * 4 = 12 summary codes
# three finding tokens, then two measurement tokens (heart rate in 3 bins, QRS in 2): 5 summary tokens
SUMMARY = SummaryConfig(
    findings=("NORM", "MI", "AFIB"),
    levels=4,
    features=FEATURE_NAMES,
    hidden=8,
    measure_tokens=("heart_rate_bpm", "qrs_ms"),
    measure_edges=((60.0, 100.0), (120.0,)),
)


def summary_code_ranges(summary: SummaryConfig, codebook_size: int = 1296) -> tuple[list[int], list[int]]:
    """(first code, number of codes) of each summary token: findings (``levels`` each), then the
    measurement tokens (their bins)."""
    firsts, sizes = [], []
    base = codebook_size
    for _ in summary.findings:
        firsts.append(base)
        sizes.append(summary.levels)
        base += summary.levels
    for edges in summary.measure_edges:
        firsts.append(base)
        sizes.append(len(edges) + 1)
        base += len(edges) + 1
    return firsts, sizes


FIXTURE_RECORDS_DIR = Path(__file__).resolve().parent / "fixtures" / "records"
# real records shipped with the tests: PTB-XL 100 Hz (three), 500 Hz, and a Challenge .hea + .mat
FIXTURE_RECORDS = ("00002_lr.hea", "00003_lr.hea", "00008_lr.hea", "00002_hr.hea", "C00002.mat")
# the tiny base LLM of the pretrain and instruct tests: its widths and the text its tokenizer is trained on
TINY_LLM_WIDTHS = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2)
TINY_LLM_CORPUS = [
    "Patient: age 63, sex male, height unknown, weight unknown. ECG: Question: Answer:",
    "Does this ECG show symptoms of atrial fibrillation? yes no not sure none",
    "sinus rhythm. left ventricular hypertrophy. abnormal qrs. normal ecg. Write the report of this ECG.",
] * 20
# the questions, answers and reports the tiny instruct checkpoints' text tokenizers are trained on
INSTRUCT_CORPUS = [
    "Patient: age 63, sex male, height unknown, weight unknown.",
    "Question: Does this ECG show symptoms of atrial fibrillation? Answer: yes no not sure none",
    "Which diagnostic symptom does this ECG show, myocardial infarction or st/t change?",
    "What rhythm-related symptoms does this ECG show? sinus rhythm; sinus bradycardia",
    "Write the report of this ECG. sinus rhythm. normal ecg. left ventricular hypertrophy.",
]


def fixture_model_inputs(preprocess: PreprocessConfig) -> tuple[Any, Any]:
    """The fixture records as model inputs: float32 (5, 12, samples) signals and (5, M) measurements."""
    import numpy as np

    from diagecg.io import read_record
    from diagecg.preprocess import model_inputs

    pairs = [model_inputs(read_record(FIXTURE_RECORDS_DIR / n), preprocess) for n in FIXTURE_RECORDS]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def random_ecg_tokenizer(
    encoder: EncoderConfig,
    fsq: FSQConfig,
    summary: SummaryConfig | None = None,
    preprocess: PreprocessConfig | None = None,
) -> Any:
    """An untrained ``EcgTokenizer`` in eval mode (weights from torch's global generator: seed it first).

    With a summary head, the measurement statistics come from the fixture records (preprocessed with
    ``preprocess``, default 100 Hz) and the head's output layer is scaled up, so that the summary levels
    differ between records: an untrained head gives every record the same levels, and a test could not
    tell a right input from a wrong one.
    """
    import torch

    from diagecg.nn.ecg_tokenizer import EcgTokenizer

    tok = EcgTokenizer(encoder, fsq, summary).eval()
    if tok.summary is not None:
        _, features = fixture_model_inputs(preprocess or PreprocessConfig(fs_hz=100))
        tok.summary.set_feature_stats(torch.from_numpy(features))
        with torch.no_grad():
            tok.summary.mlp[-1].weight.mul_(10.0)
    return tok


def save_random_ecg_tokenizer(path: Path, summary: SummaryConfig | None = None) -> FSQConfig:
    """Save an untrained tiny 100 Hz stage-1 checkpoint (FSQ levels (4, 4); with ``summary``, a summary
    head as :func:`random_ecg_tokenizer` makes it) at ``path``.

    The weights come from torch's global generator: seed it first for a reproducible checkpoint.
    """
    from diagecg.nn.checkpoint import save_checkpoint

    pre = PreprocessConfig(fs_hz=100)
    enc = EncoderConfig(
        n_samples=pre.n_samples, stem_channels=8, stage_channels=(8, 8, 8, 8), groups=4, fused_channels=16
    )
    fsq = FSQConfig(levels=(4, 4))
    configs = {ManifestKey.PREPROCESS: pre, ManifestKey.ENCODER: enc, ManifestKey.FSQ: fsq}
    if summary is not None:
        configs[ManifestKey.SUMMARY] = summary
    save_checkpoint(path, random_ecg_tokenizer(enc, fsq, summary, pre), configs, step=0)
    return fsq


def make_random_stage1(root: Path, ptbxl_root: Path, seed: int = 0) -> Path:
    """A random stage-1 checkpoint plus a cache of random FSQ indices for every real 100 Hz record."""
    import numpy as np

    from diagecg.datasets.ptbxl import PtbxlDataset

    d = root / "tokenizer"
    save_random_ecg_tokenizer(d)
    rng = np.random.default_rng(seed)
    ids = PtbxlDataset(ptbxl_root).ids(None, fs_hz=100)
    np.savez_compressed(d / ECG_TOKEN_CACHE, **{str(i): rng.integers(0, N_CODES, N_FRAMES) for i in ids})
    return d


def train_bpe_tokenizer(texts: list[str], vocab_size: int = 300) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts``, with ``<|endoftext|>`` as id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def ecg_vocab_of(tok: Any, vocab_size: int, n_codes: int = N_CODES, **ids: int) -> VocabConfig:
    """The VocabConfig of a tokenizer that already holds the ECG tokens (``ids``: bos/eos/pad ids...)."""
    return VocabConfig(
        n_codes=n_codes,
        offset=tok.token_to_id(ECG_TOKEN_FORMAT.format(0)),
        start_id=tok.token_to_id(ECG_START_TOKEN),
        end_id=tok.token_to_id(ECG_END_TOKEN),
        vocab_size=vocab_size,
        **ids,
    )


def demo_text_tokenizer(corpus: list[str]) -> tuple[Any, Any, dict[str, int]]:
    """The demo's BPE text tokenizer trained on ``corpus`` (vocab 400): the raw tokenizer, its
    ``PreTrainedTokenizerFast`` wrapper and the ids of the demo bos/eos/pad tokens."""
    from transformers import PreTrainedTokenizerFast

    from diagecg.constants import DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN
    from diagecg.training.base_model import train_text_tokenizer

    text_tok = train_text_tokenizer(corpus, vocab_size=400)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=text_tok,
        bos_token=DEMO_BOS_TOKEN,
        eos_token=DEMO_EOS_TOKEN,
        pad_token=DEMO_PAD_TOKEN,
    )
    special = {t: text_tok.token_to_id(t) for t in (DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN)}
    return text_tok, hf_tok, special


def llama_with_ecg_tokens(cfg: Any, hf_tok: Any, n_codes: int) -> tuple[Any, VocabConfig]:
    """A random ``LlamaForCausalLM(cfg)`` in eval mode, its generation config taken from ``cfg``, with the
    ``n_codes`` ECG tokens added to it and to ``hf_tok`` by the vocabulary extension."""
    from transformers import GenerationConfig as HfGenerationConfig
    from transformers import LlamaForCausalLM

    from diagecg.training.extend_vocab import extend_vocabulary

    model = LlamaForCausalLM(cfg).eval()
    model.generation_config = HfGenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id
    )
    return model, extend_vocabulary(model, hf_tok, n_codes)


_SUPER = ["conduction disturbance", "hypertrophy", "myocardial infarction", "none", "st/t change"]
_DX = [
    "complete left bundle branch block",
    "complete right bundle branch block",
    "first degree av block",
    "incomplete left bundle branch block",
    "left ventricular hypertrophy",
    "none",
]
_FORM = ["inverted t-waves", "long qt-interval", "none", "ventricular premature complex"]
_RHYTHM = ["atrial fibrillation", "none", "sinus bradycardia", "sinus rhythm", "sinus tachycardia"]
# a small answer vocabulary per ECG-QA template, shaped like answers_for_each_template.csv
QA_VOCAB: dict[str, list[str]] = {
    "1": ["no", "not sure", "yes"],
    "2": ["no", "yes"],
    "3": _SUPER,
    "4": _DX,
    "5": _DX,
    "6": _FORM,
    "7": _RHYTHM,
    "8": _DX,
    "9": _DX,
    "10": _RHYTHM,
    "11": _FORM,
    **{str(t): ["no", "yes"] for t in (12, 13, 14, 15, 16)},
}


def record_with_flat_leads(path: Path, tmp: Path, leads: tuple[int, ...]) -> Path:
    """A real record written back as WFDB with some leads flat (electrodes off)."""
    import numpy as np
    import wfdb

    from diagecg.io import read_record

    rec = read_record(path)
    signal = rec.signal.astype(np.float64).T.copy()  # (samples, leads)
    signal[:, list(leads)] = 0.0
    wfdb.wrsamp(
        "degraded",
        fs=rec.fs_hz,
        units=["mV"] * 12,
        sig_name=list(rec.lead_names),
        p_signal=signal,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp),
    )
    return tmp / "degraded.hea"


def write_record(tmp: Path, name: str, signal_mv: Any, fs_hz: float) -> Path:
    """A (12, samples) mV signal written as a WFDB record (format 16, 1000 units/mV); its ``.hea``."""
    import numpy as np
    import wfdb

    from diagecg.constants import CANONICAL_LEADS

    wfdb.wrsamp(
        name,
        fs=fs_hz,
        units=["mV"] * 12,
        sig_name=list(CANONICAL_LEADS),
        p_signal=np.asarray(signal_mv, dtype=np.float64).T.copy(),
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(tmp),
    )
    return tmp / f"{name}.hea"


def cli_script_without(blocked: tuple[str, ...], why: str) -> str:
    """Python source that runs ``diagecg`` (argv as given) with the top-level packages ``blocked``
    unimportable, and fails if any of them got imported all the same. An import hook rather than
    ``sys.modules[m] = None``, which scipy >= 1.15 trips over."""
    return f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {blocked!r}:
            raise ImportError(name + " is blocked: {why}")
sys.meta_path.insert(0, Block())
from diagecg.cli import main
try:
    main()
finally:
    assert not [m for m in sys.modules if m.partition(".")[0] in {blocked!r}]
"""
