"""ECG tokenizer (lead-wise encoder + FSQ [+ summary head]) -> one ONNX file, and its parity check
against torch (conventions: checked against a reference).

The graph maps a preprocessed signal float32 (B, leads, samples), and, when the tokenizer has a
diagnostic summary head, the record's measurements float32 (B, len(diagecg.features.FEATURE_NAMES)),
to token indices int64 (B, tokens): the summary codes first, then one FSQ index per frame. Names:
``constants.ONNX_INPUT_SIGNAL`` / ``ONNX_INPUT_FEATURES`` / ``ONNX_OUTPUT_INDICES``; the batch axis
is dynamic. The whole graph stays float32: FSQ rounds a bounded latent to a grid, so int8
quantisation of the encoder (or of the quantiser) moves latents across rounding edges and changes codes.

A code can still differ between torch and onnxruntime when a latent sits within float rounding of a
bin edge; ``check_onnx_parity`` reports that fraction on real records, for the frame codes and the
summary codes separately.

The graph is written with 2-D convolutions: ``conv1d_as_conv2d`` turns every Conv1d / MaxPool1d
of the encoder into a Conv2d / MaxPool2d over a (1, L) image with the same weights. onnxruntime's
fast blocked (NCHWc) convolution kernels serve only 4-D convolutions, so this makes the encoder faster
on CPU with identical codes (the README's runtime benchmark gives the times).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diagecg.constants import ONNX_INPUT_FEATURES, ONNX_INPUT_SIGNAL, ONNX_OUTPUT_INDICES
from diagecg.errors import ExportError
from diagecg.types import F32Array, I64Array

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18


def _index_module(ecg_tokenizer: nn.Module) -> nn.Module:
    """The signal (+ features) -> indices module of an ``EcgTokenizer`` (or the module itself if none)."""
    fn = getattr(ecg_tokenizer, "index_module", None)
    return fn() if callable(fn) else ecg_tokenizer


def _n_summary(ecg_tokenizer: nn.Module) -> int:
    """Summary tokens per record (0: the graph takes the signal only)."""
    return int(getattr(ecg_tokenizer, "n_summary", 0))


def export_index_module(ecg_tokenizer: nn.Module) -> nn.Module:
    """What is exported: a copy of the tokenizer's index module with 2-D convolutions, without the
    decoder (reconstruction only, never part of the index graph; its transposed convolutions have no
    2-D rewrite here). Same forward and the same indices as ``ecg_tokenizer.index_module()``."""
    tok = copy.deepcopy(ecg_tokenizer)
    if isinstance(getattr(tok, "decoder", None), nn.Module):
        tok.decoder = nn.Identity()
    return conv1d_as_conv2d(_index_module(tok)).eval()


def _first_int(value: object) -> int:
    """A 1-D layer's size argument as one int (torch stores some as an int, some as a 1-tuple)."""
    return int(value[0]) if isinstance(value, tuple) else int(value)  # type: ignore[call-overload]


def conv1d_as_conv2d(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose Conv1d / MaxPool1d layers are Conv2d / MaxPool2d over (1, L) images.

    Same weights (``w[:, :, None, :]``) and the same result; every ``LeadwiseEncoder`` inside gets
    ``unit_dims = (1,)`` so its reshapes add the unit axis.

    Raises:
        ValueError: a 1-D layer this cannot express (ConvTranspose1d, string padding, MaxPool1d with
            dilation or ceil_mode).
    """
    from diagecg.nn.encoder import LeadwiseEncoder

    out = copy.deepcopy(module)

    def convert(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.ConvTranspose1d) or (
                isinstance(child, nn.Conv1d) and isinstance(child.padding, str)
            ):
                raise ValueError(f"cannot express {child} as a 2-D layer")
            if isinstance(child, nn.Conv1d):
                conv = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    (1, child.kernel_size[0]),
                    stride=(1, child.stride[0]),
                    padding=(0, _first_int(child.padding)),
                    dilation=(1, child.dilation[0]),
                    groups=child.groups,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                conv.weight = nn.Parameter(child.weight.detach()[:, :, None, :].clone())
                if child.bias is not None:
                    conv.bias = nn.Parameter(child.bias.detach().clone())
                setattr(parent, name, conv)
            elif isinstance(child, nn.MaxPool1d):
                if child.dilation != 1 or child.ceil_mode or child.return_indices:
                    raise ValueError(f"cannot express {child} as a 2-D layer")
                setattr(
                    parent,
                    name,
                    nn.MaxPool2d(
                        (1, _first_int(child.kernel_size)),
                        stride=(1, _first_int(child.stride)),
                        padding=(0, _first_int(child.padding)),
                    ),
                )
            else:
                convert(child)
            if isinstance(child, LeadwiseEncoder):
                child.unit_dims = (1,)

    convert(out)
    if isinstance(out, LeadwiseEncoder):
        out.unit_dims = (1,)
    return out


def _single_file(model_proto: Any, out_path: Path) -> None:
    import onnx

    for init in model_proto.graph.initializer:  # pull any external tensors back into the proto
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise RuntimeError(f"ONNX export left {init.name!r} as external data")
    onnx.save_model(model_proto, str(out_path), save_as_external_data=False)


def export_onnx_tokenizer(
    ecg_tokenizer: nn.Module,
    n_samples: int,
    out_path: str | Path,
    *,
    n_leads: int = 12,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export the encoder + FSQ (+ summary head) as one self-contained ONNX file with a dynamic batch axis.

    Args:
        ecg_tokenizer: an ``EcgTokenizer`` (its ``index_module()`` is exported) or any module whose
            forward maps float32 (B, leads, samples) to int64 (B, frames).
        n_samples: samples per lead of the model input (``PreprocessConfig.n_samples``).
        out_path: the ``.onnx`` file to write (no external data file).
        n_leads: leads of the model input.
        opset: ONNX opset (>= 17).

    Returns:
        ``out_path``. Its inputs are ``signal`` float32 (B, leads, samples) and, when the tokenizer has
        a summary head, ``features`` float32 (B, M); its output ``indices`` int64 (B, n_tokens).

    Raises:
        ValueError: opset < 17, or the module does not return int64 (B, tokens).
        ExportError: the exported graph disagrees with torch on a random input.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset={opset} is too old; need >= 17")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ecg_tokenizer = ecg_tokenizer.float().eval()
    gen = torch.Generator().manual_seed(0)
    example: tuple[torch.Tensor, ...] = (torch.randn(2, n_leads, n_samples, generator=gen),)
    names = [ONNX_INPUT_SIGNAL]
    summary = getattr(ecg_tokenizer, "summary", None) if _n_summary(ecg_tokenizer) else None
    if summary is not None:  # measurements around the training statistics, so few are clipped
        z = torch.randn(2, summary.feature_mean.shape[0], generator=gen)
        example += (summary.feature_mean + z * summary.feature_std,)
        names.append(ONNX_INPUT_FEATURES)
    with torch.no_grad():
        want = _index_module(ecg_tokenizer)(*example)
    if want.dtype != torch.int64 or want.dim() != 2:
        raise ValueError(f"the module must return int64 (B, tokens), got {want.dtype} {tuple(want.shape)}")
    module = export_index_module(ecg_tokenizer)
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            example,
            input_names=names,
            output_names=[ONNX_OUTPUT_INDICES],
            dynamic_shapes=tuple({0: batch} for _ in example),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
            optimize=True,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model_proto = program.model_proto
    onnx.checker.check_model(model_proto)
    _single_file(model_proto, out_path)
    got = run_onnx_indices(out_path, example[0].numpy(), None if summary is None else example[1].numpy())
    mismatch = float((got != want.numpy()).mean())
    if mismatch > 0.01:
        raise ExportError(f"exported ONNX disagrees with torch on {mismatch:.1%} of codes of a random input")
    logger.info(
        "wrote %s (opset %d, %.1f kB, %d tokens)",
        out_path,
        opset,
        out_path.stat().st_size / 1e3,
        want.shape[1],
    )
    return out_path


def run_onnx_indices(
    onnx_path: str | Path, signals: F32Array, features: F32Array | None = None, *, batch_size: int = 64
) -> I64Array:
    """Run the exported graph on CPU: float32 (N, leads, samples) [+ float32 (N, M) measurements, for a
    graph with a summary head] -> int64 (N, tokens)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
    x = np.ascontiguousarray(signals, dtype=np.float32)
    f = None if features is None else np.ascontiguousarray(features, dtype=np.float32)
    out = []
    for i in range(0, len(x), batch_size):
        feeds = {ONNX_INPUT_SIGNAL: x[i : i + batch_size]}
        if f is not None:
            feeds[ONNX_INPUT_FEATURES] = f[i : i + batch_size]
        out.append(sess.run([ONNX_OUTPUT_INDICES], feeds)[0])
    return np.concatenate(out, axis=0)


def _stack(arrays: F32Array | Sequence[F32Array]) -> F32Array:
    if isinstance(arrays, Sequence):
        return np.stack([np.asarray(a, dtype=np.float32) for a in arrays])
    return np.asarray(arrays, dtype=np.float32)


def check_onnx_parity(
    ecg_tokenizer: nn.Module,
    onnx_path: str | Path,
    signals: F32Array | Sequence[F32Array],
    features: F32Array | Sequence[F32Array] | None = None,
    *,
    max_mismatch: float | None = None,
) -> dict[str, Any]:
    """Compare ONNX codes with the torch codes on real preprocessed records.

    Args:
        ecg_tokenizer: the torch tokenizer the graph came from.
        onnx_path: the exported graph.
        signals: float32 (N, leads, samples) preprocessed records (or a list of (leads, samples)).
        features: float32 (N, M) measurements of the same records (``diagecg.preprocess.model_inputs``);
            required when the tokenizer has a summary head.
        max_mismatch: when given, raise if the fraction of differing frame codes, or of differing
            summary codes, exceeds it.

    Returns:
        ``{"n_records", "n_codes" (frame codes compared), "code_agreement" (fraction of frame codes),
        "records_identical" (fraction of records whose tokens all agree), "max_abs_index_diff" (frames),
        "n_summary_codes", "summary_agreement", "max_summary_level_diff"}``; the summary entries are
        0 / 1.0 / 0 without a summary head. A summary level may differ only at an FSQ bin edge, so a
        differing level is off by one.

    Raises:
        ExportError: a mismatch exceeds ``max_mismatch``.
    """
    x = _stack(signals)
    f = None if features is None else _stack(features)
    n_summary = _n_summary(ecg_tokenizer)
    if n_summary and f is None:
        raise ValueError("this ECG tokenizer has summary tokens: pass the records' measurements")
    module = _index_module(ecg_tokenizer).float().eval()
    with torch.no_grad():
        want = torch.cat(
            [
                module(*(torch.from_numpy(a[i : i + 64]) for a in (x, f) if a is not None))
                for i in range(0, len(x), 64)
            ]
        ).numpy()
    got = run_onnx_indices(onnx_path, x, f if n_summary else None)
    same = got == want
    frames, summary = same[:, n_summary:], same[:, :n_summary]
    result = {
        "n_records": int(len(x)),
        "n_codes": int(frames.size),
        "code_agreement": float(frames.mean()),
        "records_identical": float(same.all(axis=1).mean()),
        "max_abs_index_diff": int(np.abs(got - want)[:, n_summary:].max()) if frames.size else 0,
        "n_summary_codes": int(summary.size),
        "summary_agreement": float(summary.mean()) if summary.size else 1.0,
        # codes of one finding are consecutive, so the code difference is the level difference
        "max_summary_level_diff": int(np.abs(got - want)[:, :n_summary].max()) if summary.size else 0,
    }
    logger.info(
        "ONNX parity on %d records: %.4f%% of frame codes and %.2f%% of summary codes agree, "
        "%.1f%% of records identical",
        result["n_records"],
        100 * result["code_agreement"],
        100 * result["summary_agreement"],
        100 * result["records_identical"],
    )
    if max_mismatch is not None:
        for what, key in (("codes", "code_agreement"), ("summary codes", "summary_agreement")):
            if 1.0 - result[key] > max_mismatch:
                raise ExportError(
                    f"ONNX {what} differ from torch on {1 - result[key]:.3%} of {what} "
                    f"(allowed {max_mismatch:.3%})"
                )
    return result
