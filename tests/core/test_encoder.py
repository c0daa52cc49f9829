"""Lead-wise encoder/decoder shapes for both presets, and the EcgTokenizer API."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig, preset
from diagecg.constants import ManifestKey
from diagecg.features import FEATURE_NAMES, measure_bins
from diagecg.nn.checkpoint import load_tokenizer, save_checkpoint
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.nn.encoder import InceptionBlock, LeadwiseDecoder, LeadwiseEncoder
from diagecg.nn.summary import FEATURE_CLIP


def small(enc: EncoderConfig) -> EncoderConfig:
    return dataclasses.replace(
        enc, stem_channels=8, stage_channels=(8, 16, 16, 32), groups=4, fused_channels=32
    )


@pytest.mark.parametrize(("name", "n_samples", "n_frames"), [("500hz", 5000, 313), ("100hz", 1000, 63)])
def test_encoder_frames_match_preset(name: str, n_samples: int, n_frames: int) -> None:
    pre, enc, fsq = preset(name)
    assert pre.n_samples == enc.n_samples == n_samples and enc.n_frames == n_frames
    enc = small(enc)
    encoder, decoder = LeadwiseEncoder(enc, latent_dim=fsq.dim), LeadwiseDecoder(enc, latent_dim=fsq.dim)
    x = torch.randn(2, 12, n_samples)
    z = encoder(x)
    assert z.shape == (2, n_frames, 4)
    assert decoder(z).shape == (2, 12, n_samples)


@pytest.mark.parametrize("n_samples", [16, 17, 999, 1000, 1001])
def test_encoder_frames_are_ceil_of_downsampling(n_samples: int) -> None:
    enc = small(EncoderConfig(n_samples=n_samples))
    z = LeadwiseEncoder(enc, latent_dim=3)(torch.randn(1, 12, n_samples))
    assert z.shape == (1, -(-n_samples // 16), 3) == (1, enc.n_frames, 3)


def test_default_widths_build_and_run() -> None:
    tok = EcgTokenizer(EncoderConfig(n_samples=1000), FSQConfig())
    recon, indices, codes, logits = tok(torch.randn(1, 12, 1000))
    assert recon.shape == (1, 12, 1000) and indices.shape == (1, 63) and codes.shape == (1, 63, 4)
    assert logits is None and tok.summary is None and tok.n_summary == 0


def test_inception_block_keeps_length_and_changes_width() -> None:
    block = InceptionBlock(8, 16, groups=4, negative_slope=0.1)
    assert block(torch.randn(3, 8, 101)).shape == (3, 16, 101)


def test_encoder_weights_are_shared_across_leads() -> None:
    """Inside the batched forward (B = 2, 12 leads), every lead goes through the same conv trunk on its
    own: its trunk features equal the trunk applied to that lead alone, and do not move when the
    other leads (or the other batch row) change."""
    enc = small(EncoderConfig(n_samples=1000))
    encoder = LeadwiseEncoder(enc, latent_dim=4).eval()
    seen: list[torch.Tensor] = []
    encoder.stages.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 1000, generator=gen)
    y = x.clone()
    y[0, 1:] = torch.randn(11, 1000, generator=gen)  # row 0: every lead but lead 0 changes
    y[1] = torch.randn(12, 1000, generator=gen)  # row 1: everything changes
    with torch.no_grad():
        out_x, out_y = encoder(x), encoder(y)
    fx, fy = (f.reshape(2, 12, *f.shape[1:]) for f in seen)  # (B, leads, C, T) trunk features
    torch.testing.assert_close(fx[0, 0], fy[0, 0])  # lead 0 of row 0 did not change: neither did its features
    assert not torch.allclose(fx[0, 1], fy[0, 1]) and not torch.allclose(fx[1, 0], fy[1, 0])
    trunk = torch.nn.Sequential(encoder.stem, encoder.stages)
    with torch.no_grad():
        alone = torch.stack(
            [torch.stack([trunk(x[b, k].reshape(1, 1, -1))[0] for k in range(12)]) for b in range(2)]
        )  # each lead through the trunk by itself
    torch.testing.assert_close(fx, alone, rtol=1e-4, atol=1e-5)
    assert out_x.shape == (2, 63, 4) and not torch.allclose(out_x[0], out_y[0])  # fusion mixes the leads


@pytest.fixture(scope="module")
def tokenizer() -> EcgTokenizer:
    torch.manual_seed(0)
    return EcgTokenizer(small(EncoderConfig(n_samples=1000)), FSQConfig()).eval()


def test_tokenizer_forward_encode_decode(tokenizer: EcgTokenizer) -> None:
    x = torch.randn(3, 12, 1000)
    recon, indices, codes, logits = tokenizer(x)
    assert recon.shape == x.shape and recon.dtype == torch.float32 and logits is None
    assert indices.shape == (3, 63) and indices.dtype == torch.int64
    assert codes.shape == (3, 63, 4)
    assert int(indices.min()) >= 0 and int(indices.max()) < 1296
    assert torch.equal(tokenizer.encode(x), indices)
    assert torch.equal(tokenizer.index_module()(x), indices)
    assert (tokenizer.n_tokens, tokenizer.n_codes) == (63, 1296)
    assert torch.allclose(tokenizer.decode_indices(indices), recon, atol=1e-5)


def test_tokenizer_rejects_wrong_shape_and_dtype(tokenizer: EcgTokenizer) -> None:
    with pytest.raises(ValueError, match=r"\(batch, 12, 1000\)"):
        tokenizer.encode(torch.randn(2, 11, 1000))
    with pytest.raises(ValueError, match=r"\(batch, 12, 1000\)"):
        tokenizer.encode(torch.randn(2, 12, 5000))
    with pytest.raises(TypeError, match="float"):
        tokenizer.encode(torch.zeros(2, 12, 1000, dtype=torch.int64))


def test_decode_indices_rejects_out_of_range(tokenizer: EcgTokenizer) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1296\)"):
        tokenizer.decode_indices(torch.full((1, 63), 1296))
    with pytest.raises(ValueError, match="63"):
        tokenizer.decode_indices(torch.zeros(1, 62, dtype=torch.int64))


def test_index_module_onnx_matches_torch(tokenizer: EcgTokenizer, tmp_path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "tok.onnx"
    torch.onnx.export(
        tokenizer.index_module(),
        (torch.randn(2, 12, 1000),),
        str(path),
        input_names=["signal"],
        output_names=["indices"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"signal": {0: "batch"}, "indices": {0: "batch"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 12, 1000, generator=torch.Generator().manual_seed(3))
    (got,) = sess.run(None, {"signal": x.numpy()})
    want = tokenizer.encode(x).numpy()
    assert got.dtype.name == "int64" and got.shape == (4, 63)
    # float differences between runtimes may flip a value sitting exactly on a rounding edge
    assert (got == want).mean() >= 0.99


def test_forward_is_project_of_fused() -> None:
    enc = small(EncoderConfig(n_samples=1000))
    encoder = LeadwiseEncoder(enc, latent_dim=4).eval()
    x = torch.randn(2, 12, 1000)
    h = encoder.fused(x)
    assert h.shape == (2, enc.fused_channels, 63)
    assert torch.equal(encoder.project(h), encoder(x))


# --- summary tokens ---------------------------------------------------------------------------------

FINDINGS = ("NORM", "MI", "AFIB")
LEVELS = 4


def summary_tokenizer(seed: int = 0) -> EcgTokenizer:
    torch.manual_seed(seed)
    cfg = SummaryConfig(findings=FINDINGS, levels=LEVELS, features=FEATURE_NAMES, hidden=16)
    return EcgTokenizer(small(EncoderConfig(n_samples=1000)), FSQConfig(), cfg).eval()


def features(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, len(FEATURE_NAMES), generator=torch.Generator().manual_seed(seed)) * 3


@pytest.fixture(scope="module")
def summarised() -> EcgTokenizer:
    return summary_tokenizer()


def test_summary_sizes(summarised: EcgTokenizer) -> None:
    assert summarised.n_summary == 3 and summarised.n_frames == 63 and summarised.n_tokens == 66
    assert summarised.codebook_size == 1296 and summarised.n_codes == 1296 + 3 * LEVELS


def test_encode_puts_summary_codes_before_the_frames(summarised: EcgTokenizer) -> None:
    x, f = torch.randn(4, 12, 1000), features(4)
    tokens = summarised.encode(x, f)
    assert tokens.shape == (4, 66) and tokens.dtype == torch.int64
    summary, frames = tokens[:, :3], tokens[:, 3:]
    _, indices, _, logits = summarised(x, f)
    assert torch.equal(frames, indices)  # the frame tokens are the plain FSQ indices
    assert int(frames.max()) < 1296
    assert int(summary.min()) >= 1296 and int(summary.max()) < summarised.n_codes
    for k in range(3):  # finding k owns the block [1296 + k * L, 1296 + (k + 1) * L)
        lo = 1296 + k * LEVELS
        assert ((summary[:, k] >= lo) & (summary[:, k] < lo + LEVELS)).all()
    assert logits is not None and logits.shape == (4, 3) and logits.dtype == torch.float32
    assert torch.equal(summarised.index_module()(x, f), tokens)


def test_summary_logit_is_a_function_of_its_token(summarised: EcgTokenizer) -> None:
    """The BCE is taken on the quantised code: the token the LLM reads carries the whole prediction."""
    x, f = torch.randn(6, 12, 1000), features(6)
    tokens = summarised.encode(x, f)
    _, _, _, logits = summarised(x, f)
    level = tokens[:, :3] - 1296 - torch.arange(3) * LEVELS  # (B, F) in [0, L)
    head = summarised.summary
    want = (level.float() / (LEVELS // 2) - 1) * head.scale + head.bias
    torch.testing.assert_close(logits, want)


def test_frame_tokens_do_not_depend_on_the_measurements(summarised: EcgTokenizer) -> None:
    x = torch.randn(4, 12, 1000)
    a, b = summarised.encode(x, features(4, seed=1)), summarised.encode(x, features(4, seed=2))
    assert torch.equal(a[:, 3:], b[:, 3:])
    assert not torch.equal(a[:, :3], b[:, :3])  # the summary does read them


def test_summary_needs_measurements(summarised: EcgTokenizer) -> None:
    x = torch.randn(2, 12, 1000)
    n = len(FEATURE_NAMES)
    with pytest.raises(ValueError, match=rf"measurements of shape \(2, {n}\)"):
        summarised.encode(x)
    with pytest.raises(ValueError, match="measurements"):
        summarised.encode(x, torch.zeros(2, n - 1))
    with pytest.raises(ValueError, match="measurements"):
        summarised(x, torch.zeros(3, n))


MEASURED = ("heart_rate_bpm", "qrs_ms")
EDGES = ((50.0, 60.0, 100.0), (120.0,))


def measured_tokenizer() -> EcgTokenizer:
    torch.manual_seed(0)
    cfg = SummaryConfig(
        findings=FINDINGS,
        levels=LEVELS,
        features=FEATURE_NAMES,
        hidden=16,
        measure_tokens=MEASURED,
        measure_edges=EDGES,
    )
    return EcgTokenizer(small(EncoderConfig(n_samples=1000)), FSQConfig(), cfg).eval()


def test_measurement_tokens_follow_the_findings_and_bin_the_raw_values() -> None:
    tok = measured_tokenizer()
    base = 1296 + 3 * LEVELS  # after the frame and the finding codes
    assert tok.n_summary == 5 and tok.n_tokens == 68 and tok.n_codes == base + 4 + 2
    f = torch.zeros(4, len(FEATURE_NAMES))
    hr, qrs = FEATURE_NAMES.index("heart_rate_bpm"), FEATURE_NAMES.index("qrs_ms")
    f[:, hr] = torch.tensor([45.0, 60.0, 61.0, 130.0])  # a value equal to an edge is in the lower bin
    f[:, qrs] = torch.tensor([90.0, 120.0, 121.0, 200.0])
    tokens = tok.encode(torch.randn(4, 12, 1000), f)
    assert tokens[:, 3].tolist() == [base + 0, base + 1, base + 2, base + 3]
    assert tokens[:, 4].tolist() == [base + 4, base + 4, base + 5, base + 5]
    # numpy's rule for reading a token back is the graph's
    assert measure_bins(f.numpy(), MEASURED, EDGES).tolist() == [[0, 0], [1, 0], [2, 1], [3, 1]]


@pytest.mark.parametrize("edges", [((60.0, 50.0), (1.0,)), ((60.0,),), ((), (1.0,))])
def test_measurement_token_edges_are_checked(edges) -> None:
    with pytest.raises(ValueError, match="measure_edges"):
        SummaryConfig(findings=FINDINGS, features=FEATURE_NAMES, measure_tokens=MEASURED, measure_edges=edges)


def test_measurements_without_summary_head_are_refused(tokenizer: EcgTokenizer) -> None:
    with pytest.raises(ValueError, match="no summary head"):
        tokenizer.encode(torch.randn(2, 12, 1000), features(2))


def test_summary_without_findings_is_the_plain_tokenizer() -> None:
    tok = EcgTokenizer(small(EncoderConfig(n_samples=1000)), FSQConfig(), SummaryConfig())
    assert tok.summary is None and tok.summary_cfg is None and tok.n_tokens == 63 and tok.n_codes == 1296
    assert not any(k.startswith("summary") for k in tok.state_dict())


def test_summary_measurements_are_standardised_and_clipped() -> None:
    tok = summary_tokenizer()
    stats = features(64, seed=3) * 5 + 2
    tok.summary.set_feature_stats(stats)
    torch.testing.assert_close(tok.summary.feature_mean, stats.mean(0))
    torch.testing.assert_close(tok.summary.feature_std, stats.std(0))
    x, f = torch.randn(2, 12, 1000), tok.summary.feature_mean.repeat(2, 1)
    far, farther = f.clone(), f.clone()
    far[:, 0] += (FEATURE_CLIP + 1) * tok.summary.feature_std[0]
    farther[:, 0] += 1000 * tok.summary.feature_std[0]  # one absurd measurement cannot dominate
    assert torch.equal(tok(x, far)[3], tok(x, farther)[3])


def test_checkpoint_keeps_the_summary(tmp_path) -> None:
    tok = summary_tokenizer(seed=5)
    tok.summary.set_feature_stats(features(32, seed=6) * 2 + 1)  # persistent buffers, learnt from data
    configs = {
        ManifestKey.PREPROCESS: PreprocessConfig(fs_hz=100),
        ManifestKey.ENCODER: tok.encoder_cfg,
        ManifestKey.FSQ: tok.fsq_cfg,
        ManifestKey.SUMMARY: tok.summary_cfg,
    }
    save_checkpoint(tmp_path, tok, configs, step=3)
    loaded, *_ = load_tokenizer(tmp_path)
    assert loaded.summary_cfg == tok.summary_cfg and loaded.n_codes == tok.n_codes
    torch.testing.assert_close(loaded.summary.feature_mean, tok.summary.feature_mean)
    x, f = torch.randn(4, 12, 1000), features(4)
    assert torch.equal(loaded.encode(x, f), tok.encode(x, f))
