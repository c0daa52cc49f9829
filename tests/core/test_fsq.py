"""FSQ: the mandatory index round trip, value ranges, gradients, dtype and ONNX parity."""

from __future__ import annotations

import math

import pytest
import torch

from diagecg.nn.fsq import FSQ

LEVEL_SETS = [(6, 6, 6, 6), (8, 5, 5, 5), (7, 5, 3), (2, 2), (3,), (4, 4)]


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_indices_roundtrip(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels)
    z = torch.randn(4, 50, len(levels), generator=torch.Generator().manual_seed(0)) * 3
    codes, indices = fsq(z)
    assert indices.dtype == torch.int64 and indices.shape == (4, 50)
    assert int(indices.min()) >= 0 and int(indices.max()) < math.prod(levels)
    assert torch.equal(fsq.indices_to_codes(indices), codes)
    assert torch.equal(fsq.codes_to_indices(codes), indices)


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_index_space_is_a_bijection(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels)
    every = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(every)  # (K, d)
    assert torch.equal(fsq.codes_to_indices(codes), every)
    assert torch.unique(codes, dim=0).shape[0] == fsq.codebook_size
    for i, n in enumerate(levels):
        assert torch.unique(codes[:, i]).numel() == n
        assert float(codes[:, i].min()) >= -1.0 and float(codes[:, i].max()) <= 1.0


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_fsq_quantize_reaches_every_level(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels)
    z = torch.linspace(-6, 6, 2001).unsqueeze(-1).expand(-1, len(levels))  # (2001, d)
    codes = fsq.quantize(z)
    for i, n in enumerate(levels):
        assert torch.unique(codes[:, i]).numel() == n, f"channel {i} should take {n} values"


def test_fsq_straight_through_gradient() -> None:
    fsq = FSQ((6, 6, 6, 6))
    z = torch.randn(2, 10, 4, requires_grad=True)
    codes, _ = fsq(z)
    codes.square().sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_quantize_levels_are_the_digits_of_the_index(levels: tuple[int, ...]) -> None:
    fsq = FSQ(levels)
    z = torch.randn(3, 40, len(levels), generator=torch.Generator().manual_seed(4)) * 3
    codes, lv = fsq.quantize_levels(z)
    assert lv.dtype == torch.int64 and lv.shape == z.shape and codes.shape == z.shape
    for i, n in enumerate(levels):
        assert int(lv[..., i].min()) >= 0 and int(lv[..., i].max()) < n
    half_width = torch.tensor([n // 2 for n in levels], dtype=torch.float32)
    assert torch.allclose(codes, lv.float() / half_width - 1, atol=1e-6)  # code = level / (L // 2) - 1
    want_codes, want_indices = fsq(z)
    assert torch.equal(codes, want_codes)
    assert torch.equal((lv * fsq.basis).sum(-1), want_indices)  # the mixed-radix digits of forward's index


def test_quantize_levels_reaches_every_level_of_many_channels() -> None:
    fsq = FSQ((8,) * 40)  # 8**40 codes: no mixed-radix index could hold this, levels per channel can
    z = torch.linspace(-6, 6, 1001).unsqueeze(-1).expand(-1, 40)
    _, lv = fsq.quantize_levels(z)
    assert lv.shape == (1001, 40)
    assert all(torch.equal(torch.unique(lv[:, i]), torch.arange(8)) for i in range(40))
    assert (lv[1:] >= lv[:-1]).all()  # monotone in the latent


def test_quantize_levels_straight_through_gradient() -> None:
    fsq = FSQ((8, 3))
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(5), requires_grad=True)
    codes, lv = fsq.quantize_levels(z)
    assert codes.requires_grad and not lv.requires_grad
    codes.sum().backward()
    # the rounding passes the gradient through unchanged: d codes / d z = d bound(z) / d z / (L // 2)
    zz = z.detach().clone().requires_grad_(True)
    (fsq.bound(zz) / fsq.half_width).sum().backward()
    assert z.grad is not None and torch.allclose(z.grad, zz.grad) and (z.grad > 0).all()


def test_fsq_runs_in_float32() -> None:
    fsq = FSQ((6, 6, 6, 6))
    z = torch.randn(2, 10, 4).to(torch.bfloat16)
    codes, indices = fsq(z)
    assert codes.dtype == torch.float32
    assert torch.equal(indices, fsq(z.float())[1])


def test_fsq_stores_nothing_in_state_dict() -> None:
    assert FSQ((6, 6, 6, 6)).state_dict() == {}


@pytest.mark.parametrize("levels", [(), (1, 6), (6, 0)])
def test_fsq_rejects_bad_levels(levels: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="levels"):
        FSQ(levels)


class _IndicesOnly(torch.nn.Module):
    def __init__(self, fsq: FSQ) -> None:
        super().__init__()
        self.fsq = fsq

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fsq(z)[1]


def test_fsq_onnx_export_matches_torch(tmp_path) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    fsq = FSQ((6, 6, 6, 6))
    z = torch.randn(3, 63, 4, generator=torch.Generator().manual_seed(1)) * 2
    path = tmp_path / "fsq.onnx"
    torch.onnx.export(
        _IndicesOnly(fsq),
        (z,),
        str(path),
        input_names=["z"],
        output_names=["indices"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"z": {0: "batch", 1: "frames"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z2 = torch.randn(5, 40, 4, generator=torch.Generator().manual_seed(2)) * 2
    (got,) = sess.run(None, {"z": z2.numpy()})
    assert got.dtype.name == "int64"
    assert (got == fsq(z2)[1].numpy()).all()
