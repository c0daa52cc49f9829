"""Lead-wise encoder/decoder shapes for both presets, and the EcgTokenizer API."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diagecg.config import EncoderConfig, FSQConfig, preset
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.nn.encoder import InceptionBlock, LeadwiseDecoder, LeadwiseEncoder


def small(enc: EncoderConfig) -> EncoderConfig:
    return dataclasses.replace(enc, stem_channels=8, stage_channels=(8, 16, 16, 32), groups=4,
                               fused_channels=32)


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
    recon, indices, codes = tok(torch.randn(1, 12, 1000))
    assert recon.shape == (1, 12, 1000) and indices.shape == (1, 63) and codes.shape == (1, 63, 4)


def test_inception_block_keeps_length_and_changes_width() -> None:
    block = InceptionBlock(8, 16, groups=4, negative_slope=0.1)
    assert block(torch.randn(3, 8, 101)).shape == (3, 16, 101)


def test_encoder_weights_are_shared_across_leads() -> None:
    # the conv trunk sees each lead alone: a lead's trunk features do not depend on the other leads
    enc = small(EncoderConfig(n_samples=1000))
    encoder = LeadwiseEncoder(enc, latent_dim=4).eval()
    x = torch.randn(1, 12, 1000)
    y = x.clone()
    y[:, 1:] = torch.randn(1, 11, 1000)
    trunk = torch.nn.Sequential(encoder.stem, encoder.stages)
    assert torch.allclose(trunk(x[:, :1]), trunk(y[:, :1]))
    assert torch.allclose(trunk(x.reshape(12, 1, 1000))[0], trunk(x[:, :1])[0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def tokenizer() -> EcgTokenizer:
    torch.manual_seed(0)
    return EcgTokenizer(small(EncoderConfig(n_samples=1000)), FSQConfig()).eval()


def test_tokenizer_forward_encode_decode(tokenizer: EcgTokenizer) -> None:
    x = torch.randn(3, 12, 1000)
    recon, indices, codes = tokenizer(x)
    assert recon.shape == x.shape and recon.dtype == torch.float32
    assert indices.shape == (3, 63) and indices.dtype == torch.int64
    assert codes.shape == (3, 63, 4)
    assert int(indices.min()) >= 0 and int(indices.max()) < 1296
    assert torch.equal(tokenizer.encode(x), indices)
    assert torch.equal(tokenizer.index_module()(x), indices)
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
    torch.onnx.export(tokenizer.index_module(), (torch.randn(2, 12, 1000),), str(path),
                      input_names=["signal"], output_names=["indices"], opset_version=17, dynamo=False,
                      dynamic_axes={"signal": {0: "batch"}, "indices": {0: "batch"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 12, 1000, generator=torch.Generator().manual_seed(3))
    (got,) = sess.run(None, {"signal": x.numpy()})
    want = tokenizer.encode(x).numpy()
    assert got.dtype.name == "int64" and got.shape == (4, 63)
    # float differences between runtimes may flip a value sitting exactly on a rounding edge (STYLE R12)
    assert (got == want).mean() >= 0.99
