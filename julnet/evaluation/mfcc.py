"""MFCCs as syncnet_python feeds its expert SyncNet: `python_speech_features.mfcc` with its defaults, in numpy.

Defaults (python_speech_features 0.6): 25 ms rectangular frames every 10 ms (400 / 160 samples at 16 kHz), the
last frame zero-padded, pre-emphasis 0.97, 512-point power spectrum |rfft|²/512, 26 triangular HTK-mel filters
over 0 .. sr/2 on floor((512+1)·f/sr) FFT bins, natural log, orthonormal DCT-II kept to 13 coefficients, sine
lifter 22, and coefficient 0 replaced by the log of the frame's total power. Zeros become float eps before a log.
"""

from __future__ import annotations

import math

import numpy as np

WIN_SECONDS = 0.025
STEP_SECONDS = 0.01
N_FFT = 512
N_FILTERS = 26
N_CEPSTRA = 13
PREEMPHASIS = 0.97
LIFTER = 22
_EPS = np.finfo(float).eps


def mel_filters(sample_rate: int, n_filters: int = N_FILTERS, n_fft: int = N_FFT) -> np.ndarray:
    """(n_filters, n_fft // 2 + 1) triangles between FFT bins evenly spaced in HTK mel, as python_speech_features builds them."""
    top = 2595 * np.log10(1 + (sample_rate / 2) / 700)
    hz = 700 * (10 ** (np.linspace(0, top, n_filters + 2) / 2595) - 1)
    bins = np.floor((n_fft + 1) * hz / sample_rate)
    k = np.arange(n_fft // 2 + 1)[None, :]
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    rising = np.where((k >= lo) & (k < mid), (k - lo) / np.maximum(mid - lo, 1), 0.0)
    falling = np.where((k >= mid) & (k < hi), (hi - k) / np.maximum(hi - mid, 1), 0.0)
    return rising + falling


def _dct_ortho(n: int, keep: int) -> np.ndarray:
    """(n, keep) orthonormal DCT-II basis: x @ basis is scipy's dct(x, type=2, norm='ortho')[..., :keep]."""
    k, t = np.arange(keep)[None, :], np.arange(n)[:, None]
    basis = np.cos(np.pi * k * (2 * t + 1) / (2 * n)) * math.sqrt(2 / n)
    basis[:, 0] /= math.sqrt(2)
    return basis


def mfcc(signal: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(frames, 13) MFCCs of a 1-D signal in whatever units it comes (syncnet_python passes int16 PCM values)."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mfcc of an empty signal")
    x = np.append(x[0], x[1:] - PREEMPHASIS * x[:-1])
    length, step = round(WIN_SECONDS * sample_rate), round(STEP_SECONDS * sample_rate)
    count = 1 if x.size <= length else 1 + math.ceil((x.size - length) / step)
    x = np.pad(x, (0, (count - 1) * step + length - x.size))
    frames = x[np.arange(count)[:, None] * step + np.arange(length)[None, :]]
    power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2 / N_FFT
    energy = power.sum(axis=1)
    bands = power @ mel_filters(sample_rate).T
    cepstra = np.log(np.where(bands == 0, _EPS, bands)) @ _dct_ortho(N_FILTERS, N_CEPSTRA)
    cepstra *= 1 + (LIFTER / 2) * np.sin(np.pi * np.arange(N_CEPSTRA) / LIFTER)
    cepstra[:, 0] = np.log(np.where(energy == 0, _EPS, energy))
    return cepstra
