"""diagecg.dsp against scipy.signal, which it replaces in preprocessing (scipy is a test dependency)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.signal

from diagecg import dsp


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    """(3, 3001) float64: a random walk (baseline wander) plus white noise plus a DC offset."""
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((3, 3001)), axis=-1) * 0.05
    return walk + rng.standard_normal((3, 3001)) + np.array([[0.0], [2.5], [-40.0]])


@pytest.mark.parametrize(
    "up,down",
    [(1, 5), (1, 2), (2, 5), (5, 1), (4, 3), (7, 3), (100, 257), (257, 100), (360, 500), (1, 1), (10, 10)],
)
@pytest.mark.parametrize("n", [2, 3, 57, 3001])
def test_resample_poly_equals_scipy(signal: np.ndarray, up: int, down: int, n: int) -> None:
    x = signal[:, :n]
    expected = scipy.signal.resample_poly(x, up, down, axis=-1, padtype="line")
    got = dsp.resample_poly(x, up, down)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * max(1.0, np.abs(x).max()))


def test_resample_poly_1d_and_bad_arguments() -> None:
    x = np.linspace(0.0, 1.0, 50)
    expected = scipy.signal.resample_poly(x, 1, 2, padtype="line")
    np.testing.assert_allclose(dsp.resample_poly(x, 1, 2), expected, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 samples"):
        dsp.resample_poly(x[:1], 1, 2)
    with pytest.raises(ValueError, match=">= 1"):
        dsp.resample_poly(x, 0, 2)


def test_lowpass_fir_equals_firwin() -> None:
    for up, down in [(1, 5), (3, 7), (100, 257)]:
        m = max(up, down)
        expected = scipy.signal.firwin(20 * m + 1, 1.0 / m, window=("kaiser", 5.0)) * up
        np.testing.assert_allclose(dsp.lowpass_fir(up, down), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize(
    "btype,cutoff_hz,fs_hz",
    [
        ("highpass", 0.5, 100),
        ("highpass", 0.5, 500),
        ("highpass", 0.67, 257),
        ("lowpass", 40.0, 100),
        ("lowpass", 150.0, 500),
        ("lowpass", 1.0, 250),
    ],
)
def test_butter_filtfilt_equals_sosfiltfilt(
    signal: np.ndarray, order: int, btype: str, cutoff_hz: float, fs_hz: float
) -> None:
    sos = scipy.signal.butter(order, cutoff_hz, btype=btype, fs=fs_hz, output="sos")
    expected = scipy.signal.sosfiltfilt(sos, signal, axis=-1)
    got = dsp.butter_filtfilt(signal, order, cutoff_hz, btype, fs_hz)
    assert got.shape == signal.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)


def test_butter_zpk_equals_scipy() -> None:
    for order, btype in [(1, "lowpass"), (2, "highpass"), (5, "highpass"), (6, "lowpass")]:
        z, p, k = dsp.butter_zpk(order, 3.0, btype, 100.0)
        z_ref, p_ref, k_ref = scipy.signal.butter(order, 3.0, btype=btype, fs=100.0, output="zpk")
        np.testing.assert_allclose(np.sort_complex(z), np.sort_complex(z_ref), atol=1e-12)
        np.testing.assert_allclose(np.sort_complex(p), np.sort_complex(p_ref), atol=1e-12)
        assert k == pytest.approx(k_ref, rel=1e-12)


def test_butter_filtfilt_rejects_bad_arguments() -> None:
    x = np.zeros(100)
    with pytest.raises(ValueError, match="more than 9 samples"):
        dsp.butter_filtfilt(x[:9], 2, 0.5, "highpass", 100)
    with pytest.raises(ValueError, match="cutoff"):
        dsp.butter_filtfilt(x, 2, 50.0, "lowpass", 100)
    with pytest.raises(ValueError, match="btype"):
        dsp.butter_filtfilt(x, 2, 5.0, "bandpass", 100)
    with pytest.raises(ValueError, match="order"):
        dsp.butter_filtfilt(x, 0, 5.0, "lowpass", 100)


def test_preprocess_runs_without_scipy() -> None:
    """The runtime's preprocessing (resampling and filtering) must not need scipy at all."""
    probe = textwrap.dedent(
        """
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "scipy":
                    raise ImportError(name + " is blocked")
                return None
        sys.meta_path.insert(0, Block())
        import numpy as np
        import diagecg.runtime.pipeline
        from diagecg.config import PRESETS
        from diagecg.preprocess import preprocess_signal
        x = np.random.default_rng(0).standard_normal((12, 5000))  # 10 s at 500 Hz
        y = preprocess_signal(x, 500.0, PRESETS["100hz"][0])  # resample to 100 Hz + high-pass
        scipy_loaded = sorted(m for m in sys.modules if m.startswith("scipy"))
        print(json.dumps({"shape": list(y.shape), "scipy": scipy_loaded}))
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"shape": [12, 1000], "scipy": []}


def test_fft_len_is_the_smallest_5_smooth_size() -> None:
    def smooth(n: int) -> bool:
        for f in (2, 3, 5):
            while n % f == 0:
                n //= f
        return n == 1

    for n in range(1, 3000):
        got = dsp._fft_len(n)
        assert got >= n and smooth(got) and not any(smooth(m) for m in range(n, got))
