"""Every format string of diagecg, defined once (conventions: defined once).

Bundle file names, manifest keys, ONNX input/output names, special tokens and
the format version live here and nowhere else.
"""

from __future__ import annotations

FORMAT_VERSION = 1  # bundle format; load_bundle rejects any other value

# --- leads ---------------------------------------------------------------
CANONICAL_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)
N_LEADS = len(CANONICAL_LEADS)

# --- ECG tokens ------------------------------------------------------------
ECG_START_TOKEN = "<ecg>"
ECG_END_TOKEN = "</ecg>"
ECG_TOKEN_FORMAT = "<ecg_{:04d}>"  # FSQ index k -> "<ecg_0007>"
ECG_TOKEN_PATTERN = r"<\s*/?\s*ecg(?:_\d+)?\s*>"  # anything that looks like an ECG token in typed text

# --- answers -----------------------------------------------------------------
ANSWER_SEPARATOR = "; "  # a QA answer set is written as its members sorted and joined by this

# --- checkpoints (training stages) -------------------------------------------
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_STATE = "trainer_state.json"  # step, optimiser file, rng seed
CHECKPOINT_OPTIMIZER = "optimizer.safetensors"
RUN_SUMMARY = "run_summary.json"
# diagecg eval --set calibrate=true results, beside the checkpoint they calibrate
CALIBRATION_RESULTS = "calibration_results.json"
ECG_TOKEN_CACHE = "ecg_tokens.npz"  # ecg_id -> FSQ indices (frames,) int64

# --- LLM stage checkpoints (pretrain / instruct; see diagecg.nn.llm_checkpoint) -------
LLM_CHECKPOINT_VERSION = 1  # load_llm_checkpoint rejects any other value
LLM_META = "llm_meta.json"  # LlmMeta: vocab, prompt, generation, base model, method, stage
LLM_TEXT_TOKENIZER = "text_tokenizer.json"  # base text tokenizer WITHOUT the ECG tokens
LLM_HF_TOKENIZER_DIR = "tokenizer"  # transformers tokenizer WITH the ECG tokens
LLM_MODEL_DIR = "model"  # full weights (method "full")
LLM_ADAPTER_DIR = "adapter"  # peft adapter (method "lora")
LLM_BASE_DIR = "base_model"  # copy of the base model an adapter applies to
LLM_ECG_TOKENIZER_DIR = "ecg_tokenizer"  # copy of the stage-1 checkpoint
LLM_TRAIN_STATE_DIR = "train_state"  # optimiser state + step, for --resume
DEMO_BOS_TOKEN = "<|begin_of_text|>"  # special tokens of the tiny from-scratch demo model
DEMO_EOS_TOKEN = "<|end_of_text|>"
DEMO_PAD_TOKEN = "<|pad|>"

# --- bundle ----------------------------------------------------------------
MANIFEST_NAME = "manifest.json"
BUNDLE_ONNX_NAME = "ecg_tokenizer.onnx"
BUNDLE_TOKENIZER_NAME = "tokenizer.json"  # HF `tokenizers` file for text pieces
BUNDLE_GGUF_FORMAT = "llm-{quant}.gguf"  # quant in QUANT_TYPES, lower case

ONNX_INPUT_SIGNAL = "signal"  # float32 (batch, leads, samples), preprocessed
ONNX_INPUT_FEATURES = "features"  # float32 (batch, measurements), diagecg.features; with a summary only
ONNX_OUTPUT_INDICES = "indices"  # int64 (batch, tokens): summary codes, then frame FSQ codes

QUANT_TYPES: tuple[str, ...] = ("f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")
DEFAULT_BUNDLE_DIR = "bundles/default"  # the shipped bundle, relative to the diagecg package folder


class ManifestKey:
    """Top-level keys of manifest.json."""

    FORMAT_VERSION = "format_version"
    DIAGECG_VERSION = "diagecg_version"
    PACKAGE_VERSIONS = "package_versions"
    FILES = "files"  # {relative name: {"sha256": ..., "bytes": ...}}
    PREPROCESS = "preprocess"
    ENCODER = "encoder"
    FSQ = "fsq"
    SUMMARY = "summary"  # SummaryConfig; absent or no findings = frame tokens only
    VOCAB = "vocab"
    PROMPT = "prompt"
    GENERATION = "generation"
    ANSWER_VOCAB = "answer_vocabularies"
    QUESTIONS = "questions"  # diagecg.questions.QuestionCatalogue; absent = no question matching
    TRAINING = "training"
    EVALUATION = "evaluation"
    # {"fitted_on": {...}, "findings": {name asked: {"code", "a", "b", "threshold", "n", "n_pos"}}}: the
    # per-finding Platt map of p(present) and the yes threshold (diagecg.calibration.fit_calibration)
    CALIBRATION = "calibration"
    PARITY = "parity"
    LLM_FILES = "llm_files"  # {quant: file name}
    DEFAULT_QUANT = "default_quant"
    PRESET = "preset"  # "500hz" | "100hz" | null
    ONNX = "onnx"  # {"file", "input", "output", "n_leads", "n_samples", "n_frames", "opset"}
    LLM = "llm"  # {quant: GGUF facts: architecture, n_vocab, context_length, ...}
    TEXT_TOKENIZER = "text_tokenizer"  # BUNDLE_TOKENIZER_NAME or null
