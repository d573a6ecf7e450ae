"""Per-video-frame audio features: built-in log-mel (pure torch, no weights) or imported DeepSpeech.

Log-mel front end (the paper's "one feature vector per 20 ms"): a Hann window of 40 ms (640 samples at
16 kHz) zero-padded to a 1024-point FFT, hop 20 ms (320 samples), power spectrum, `n_mels` triangular
HTK-mel filters over 0 Hz .. min(8 kHz, Nyquist) with unit peak, natural log of (energy + 1e-6).
STFT row j is centred at j * 20 ms (torch.stft center=True, zero padding).

Resampling to the video rate: video frame i shows [i/fps, (i+1)/fps), centred at (i + 0.5)/fps. Its row is
a triangular-weighted average of the 20 ms mel *energies* (before the log) with half-width 1/fps around
that centre. At 25 fps this is exactly 0.25 * row(2i) + 0.5 * row(2i+1) + 0.25 * row(2i+2), i.e. it
covers the frame's 40 ms with every 20 ms row counted. Audio shorter than the video is padded with
silence (zeros) at the end; a window that reaches past either end is clamped to the first/last row.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

HOP_SECONDS = 0.02
WINDOW_SECONDS = 0.04
F_MAX = 8000.0
LOG_FLOOR = 1e-6
DEEPSPEECH_DIM = 29


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale."""
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of hz_to_mel."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_edges(n_mels: int, sample_rate: int, f_min: float = 0.0) -> torch.Tensor:
    """(n_mels + 2,) Hz: the lower edge, the n_mels filter centres and the upper edge, evenly spaced in mel."""
    f_max = min(F_MAX, sample_rate / 2)
    lo, hi = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    return mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, each peaking at 1."""
    hz = mel_edges(n_mels, sample_rate, f_min)
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def mel_energies(samples: np.ndarray | torch.Tensor, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    """(rows, n_mels) mel energies, one row per 20 ms hop, row j centred at j * 20 ms."""
    hop = round(HOP_SECONDS * sample_rate)
    win = round(WINDOW_SECONDS * sample_rate)
    n_fft = 2 ** math.ceil(math.log2(win))
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1)
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(
        x, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win), center=True, pad_mode="constant",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # (freqs, rows)
    return (mel_filterbank(n_mels, n_fft, sample_rate) @ power).T


def to_frame_rate(rows: torch.Tensor, n_frames: int, fps: float, hop_seconds: float = HOP_SECONDS) -> torch.Tensor:
    """(n_frames, D) from (rows, D) at one row per hop_seconds: triangle-weighted average around each frame's centre."""
    centres = (torch.arange(n_frames, dtype=torch.float64) + 0.5) / fps / hop_seconds  # in row units
    half = 1.0 / fps / hop_seconds
    reach = math.ceil(half)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    pos = torch.floor(centres)[:, None] + offsets  # candidate row positions (n_frames, taps)
    weights = torch.clamp(1.0 - (pos - centres[:, None]).abs() / half, min=0.0)
    weights = weights / weights.sum(dim=1, keepdim=True)
    index = pos.long().clamp(0, rows.shape[0] - 1)
    return (rows.double()[index] * weights[..., None]).sum(dim=1).float()


def frame_features(
    samples: np.ndarray, sample_rate: int, n_frames: int, fps: float = 25, n_mels: int = 80
) -> np.ndarray:
    """(n_frames, n_mels) float32 log-mel; row i describes video frame i's interval [i/fps, (i+1)/fps)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    needed = math.ceil(n_frames / fps * sample_rate)
    if samples.size < needed:
        samples = np.pad(samples, (0, needed - samples.size))  # audio shorter than the video: silence
    energies = to_frame_rate(mel_energies(samples, sample_rate, n_mels), n_frames, fps)
    return torch.log(energies + LOG_FLOOR).numpy()


def frame_windows(features: np.ndarray, size: int = 5) -> np.ndarray:
    """(K, D) per-frame features -> (K, D, size): for each frame the window centred on it, edges replicated."""
    if size % 2 != 1:
        raise ValueError(f"window size must be odd, got {size}")
    k = len(features)
    rows = np.clip(np.arange(k)[:, None] + np.arange(size) - size // 2, 0, k - 1)
    return np.ascontiguousarray(features[rows].transpose(0, 2, 1))


def load_deepspeech(path: str | os.PathLike[str], n_frames: int, tolerance: int = 0) -> np.ndarray:
    """(n_frames, 29) float32 DeepSpeech logits as DINet's preprocessing writes them (np.savetxt .txt or .npy, 25 fps).

    A row count differing from n_frames by at most `tolerance` is trimmed or edge-padded; more is an error.
    """
    path = os.fspath(path)
    data = np.load(path) if path.endswith(".npy") else np.loadtxt(path, ndmin=2)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != DEEPSPEECH_DIM:
        raise ValueError(f"{path}: expected DeepSpeech features of shape (frames, {DEEPSPEECH_DIM}), got {data.shape}")
    if abs(len(data) - n_frames) > tolerance:
        raise ValueError(
            f"{path}: {len(data)} DeepSpeech rows but the video has {n_frames} frames at 25 fps "
            f"(difference {len(data) - n_frames}, tolerance {tolerance})"
        )
    if len(data) < n_frames:
        data = np.concatenate([data, np.repeat(data[-1:], n_frames - len(data), axis=0)])
    return data[:n_frames]
