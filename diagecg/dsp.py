"""The two signal-processing steps of ``diagecg.preprocess``, in numpy alone.

``resample_poly`` and ``butter_filtfilt`` compute what ``scipy.signal.resample_poly(x, up, down,
padtype="line")`` and ``scipy.signal.sosfiltfilt(scipy.signal.butter(..., output="sos"), x)`` compute,
to float64 rounding (``tests/core/test_dsp.py`` compares them with scipy over many rates, orders
and cutoffs). They exist because ``import scipy.signal`` costs the torch-free runtime more resident memory and
start-up time than onnxruntime and llama.cpp together (the README's runtime benchmark gives the numbers).

How each is computed:

* ``resample_poly``: the same Kaiser-windowed sinc low-pass (``firwin(20 * max(up, down) + 1,
  1 / max(up, down), window=("kaiser", 5.0))``), applied polyphase: output sample ``m`` is the
  dot product of one phase of the filter with the input around ``m * down / up``, the input being
  extended past its ends by the straight line through its first and last samples. Outputs that
  share a phase read strided windows of one ``sliding_window_view``: no copy, one matvec each.
* ``butter_filtfilt``: the digital Butterworth filter as zeros/poles/gain (analog prototype,
  frequency transform, bilinear transform with pre-warping), run forwards and backwards as
  ``sosfiltfilt`` does it: odd extension of ``3 * (2 * sections + 1 - odd order)`` samples,
  each pass started in the steady state of its first sample. A pass from that steady state is
  ``G * v[0] + (h * (v - v[0]))`` with ``G`` the DC gain and ``h`` the impulse response, which is
  evaluated as a product in the frequency domain, on an FFT long enough for ``h`` to have decayed
  below 1e-18 of its start (the poles' radius sets the length; a 5-smooth size, and the response
  is cached per filter and length).
"""

from __future__ import annotations

import functools
import math

import numpy as np

KAISER_BETA = 5.0  # scipy.signal.resample_poly's default window ("kaiser", 5.0)
HALF_LEN_PER_RATE = 10  # its filter half-length, in multiples of max(up, down)
IMPULSE_TAIL = 1e-18  # |h[n]| / |h[0]| below which the IIR impulse response is taken as ended
# the longest impulse tail a filter may have (samples): 0.05 Hz at 20 kHz needs 3.7M; a cut-off of
# 1e-9 Hz asked for 4.7e12 (3.4 TiB of FFT buffers)
MAX_IMPULSE_TAIL = 1 << 23


def _line_extend(x: np.ndarray, n_left: int, n_right: int) -> np.ndarray:
    """``x`` (..., n) extended along the last axis by the line through its first and last samples."""
    n = x.shape[-1]
    slope = (x[..., -1:] - x[..., :1]) / (n - 1) if n > 1 else np.zeros_like(x[..., :1])
    left = x[..., :1] - slope * np.arange(n_left, 0, -1)
    right = x[..., -1:] + slope * np.arange(1, n_right + 1)
    return np.concatenate([left, x, right], axis=-1)


def lowpass_fir(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter of ``resample_poly``, times ``up``; float64 (20 * max + 1,)."""
    max_rate = max(up, down)
    half_len = HALF_LEN_PER_RATE * max_rate
    m = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(m / max_rate) / max_rate * np.kaiser(2 * half_len + 1, KAISER_BETA)
    return h / h.sum() * up  # unit DC gain, then the zero-stuffing gain


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample by ``up / down`` along the last axis: (..., n) -> (..., ceil(n * up / down)).

    Args:
        x: float array, at least 2 samples along the last axis.
        up, down: positive integers (reduced by their gcd here).
    """
    if up < 1 or down < 1:
        raise ValueError(f"up={up} and down={down} must be >= 1")
    g = math.gcd(up, down)
    up, down = up // g, down // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    n_in = x.shape[-1]
    if n_in < 2:
        raise ValueError(f"resampling needs at least 2 samples, got {n_in}")
    n_out = -(-n_in * up // down)
    h = lowpass_fir(up, down)
    half_len = (len(h) - 1) // 2
    n_taps = -(-len(h) // up)  # taps per phase
    padded = np.zeros(n_taps * up)
    padded[: len(h)] = h
    phases = padded.reshape(n_taps, up).T  # (up, n_taps): phases[r, j] = h[r + up * j]

    # output m reads the zero-stuffed input at k - i, i.e. x[k // up - j] with filter tap r + up * j,
    # where k = half_len + m * down and r = k % up. The phase r repeats with period up, so outputs
    # m0, m0 + up, m0 + 2 * up... share one phase and read windows of x that advance by down.
    last = (half_len + (n_out - 1) * down) // up
    pad_left = n_taps - 1
    pad_right = max(0, last - (n_in - 1))
    xe = _line_extend(x, pad_left, pad_right)  # x[i] is xe[i + pad_left]
    windows = np.lib.stride_tricks.sliding_window_view(xe, n_taps, axis=-1)  # (..., len, n_taps) view
    out = np.empty(x.shape[:-1] + (n_out,))
    for m0 in range(min(up, n_out)):
        start, phase = divmod(half_len + m0 * down, up)  # window [start - n_taps + 1, start] of x
        count = len(range(m0, n_out, up))
        w = windows[..., start : start + (count - 1) * down + 1 : down, :]  # (..., count, n_taps)
        out[..., m0::up] = w @ phases[phase, ::-1]
    return out


def butter_zpk(
    order: int, cutoff_hz: float, btype: str, fs_hz: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Digital Butterworth zeros, poles and gain (as ``scipy.signal.butter(..., output="zpk")``).

    Args:
        order: filter order >= 1.
        cutoff_hz: -3 dB frequency, in (0, fs_hz / 2).
        btype: ``"lowpass"`` or ``"highpass"``.
        fs_hz: sampling rate.
    """
    if order < 1:
        raise ValueError(f"order={order} must be >= 1")
    if not 0 < cutoff_hz < fs_hz / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie in (0, {fs_hz / 2}) Hz")
    if btype not in ("lowpass", "highpass"):
        raise ValueError(f"btype={btype!r} must be 'lowpass' or 'highpass'")
    fs2 = 4.0  # bilinear transform at a normalised rate of 2: s = fs2 * (z - 1) / (z + 1)
    warped = fs2 * math.tan(math.pi * cutoff_hz / fs_hz)  # pre-warped analog cutoff
    p = -np.exp(1j * np.pi * np.arange(-order + 1, order, 2) / (2 * order))  # analog prototype, cutoff 1
    if btype == "lowpass":
        za = np.zeros(0, dtype=complex)
        pa = warped * p
        k = warped**order
        z_extra = -np.ones(order)  # the analog zeros at infinity map to z = -1
    else:
        za = np.zeros(order, dtype=complex)  # s -> warped / s puts every zero at s = 0
        pa = warped / p
        k = float(np.real(1.0 / np.prod(-p)))
        z_extra = np.zeros(0)
    z = np.concatenate([(fs2 + za) / (fs2 - za), z_extra])
    pz = (fs2 + pa) / (fs2 - pa)
    k = float(k * np.real(np.prod(fs2 - za) / np.prod(fs2 - pa)))
    return z, pz, k


def _fft_len(n: int) -> int:
    """The smallest 2**a * 3**b * 5**c >= n (sizes pocketfft transforms fastest)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


@functools.lru_cache(maxsize=16)
def _response(
    order: int, cutoff_hz: float, btype: str, fs_hz: float, n_samples: int
) -> tuple[np.ndarray, float, int]:
    """(frequency response on the rfft grid, DC gain, FFT length) of a filter pass over n_samples."""
    z, p, k = butter_zpk(order, cutoff_hz, btype, fs_hz)
    radius = float(np.max(np.abs(p)))
    decay = math.ceil(math.log(IMPULSE_TAIL) / math.log(radius)) if radius > 0 else 1
    if decay > MAX_IMPULSE_TAIL:
        raise ValueError(
            f"a {cutoff_hz:g} Hz {btype} at {fs_hz:g} Hz rings for {decay:.3g} samples (more "
            f"than {MAX_IMPULSE_TAIL}): the cut-off is too low for this sampling rate"
        )
    n_fft = _fft_len(n_samples + decay)
    e = np.exp(2j * np.pi * np.arange(n_fft // 2 + 1) / n_fft)  # e^{jw} on the rfft grid
    response = k * np.prod(e[:, None] - z[None, :], axis=1) / np.prod(e[:, None] - p[None, :], axis=1)
    response.flags.writeable = False
    dc_gain = float(np.real(k * np.prod(1 - z) / np.prod(1 - p)))
    return response, dc_gain, n_fft


def _pass(v: np.ndarray, response: np.ndarray, dc_gain: float, n_fft: int) -> np.ndarray:
    """One causal pass over the last axis, started in the steady state of ``v[..., 0]``."""
    v0 = v[..., :1]
    y = np.fft.irfft(np.fft.rfft(v - v0, n_fft) * response, n_fft)[..., : v.shape[-1]]
    return y + dc_gain * v0


def butter_filtfilt(x: np.ndarray, order: int, cutoff_hz: float, btype: str, fs_hz: float) -> np.ndarray:
    """Zero-phase Butterworth filtering along the last axis, as ``sosfiltfilt(butter(...), x)``.

    Args:
        x: float array (..., n) with n > the odd-extension length ``3 * (2 * ceil(order / 2) + 1 -
            order % 2)``.
        order, cutoff_hz, btype, fs_hz: as :func:`butter_zpk`.

    Returns:
        float64 array of the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    padlen = 3 * (2 * ((order + 1) // 2) + 1 - order % 2)  # sosfiltfilt's default for butter's sections
    if n <= padlen:
        raise ValueError(f"filtering needs more than {padlen} samples, got {n}")
    left = 2 * x[..., :1] - x[..., padlen:0:-1]
    right = 2 * x[..., -1:] - x[..., -2 : -padlen - 2 : -1]
    ext = np.concatenate([left, x, right], axis=-1)

    response, dc_gain, n_fft = _response(order, float(cutoff_hz), btype, float(fs_hz), ext.shape[-1])

    y = _pass(ext, response, dc_gain, n_fft)
    y = _pass(y[..., ::-1], response, dc_gain, n_fft)[..., ::-1]
    return y[..., padlen : padlen + n]
