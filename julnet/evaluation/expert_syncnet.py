"""The expert SyncNet behind LSE-D / LSE-C: syncnet_python's network (Chung & Zisserman, `SyncNetModel.S`), so
its public LRS2-trained `syncnet_v2.model` state dict loads strictly, and its inputs prepared as
`SyncNetInstance.evaluate` prepares them.

Video: clips of 5 consecutive 224x224 frames as (N, 3, 5, 224, 224), BGR (cv2.imread order), float values
0..255, no normalisation. syncnet_python feeds its whole face-track crop there; here the frames are the generated
face crop's mouth region (`julnet.face.mouth_box`: nose to chin, cheek to cheek, a square, so the resize to 224
keeps the aspect), the part the generator changes. Values are therefore not directly comparable with numbers
measured on syncnet_python's own crops of full videos.
Audio: the video's 16 kHz mono audio as int16 PCM values (what ffmpeg's pcm_s16le gives it), MFCCs at 100 Hz
(`julnet.evaluation.mfcc`), window i = MFCC rows 4i .. 4i+19 against frames i .. i+4, and
min(frames, samples // 640) − 5 windows per video (syncnet_python's count).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from julnet.config import PretrainedWeights
from julnet.evaluation.mfcc import mfcc
from julnet.evaluation.unavailable import Unavailable
from julnet.face import crop_mouth
from julnet.pretrained import read_state_dict

SAMPLE_RATE = 16000
FPS = 25
CLIP_FRAMES = 5
FRAME_SIZE = 224
MFCC_PER_FRAME = 4  # 100 Hz MFCC rows per 25 fps video frame
MFCC_WINDOW = 20  # rows per 5-frame clip
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
EMBED_DIM = 1024
_EXPERT = "LSE needs the expert SyncNet of syncnet_python (syncnet_v2.model, LRS2-trained)"


def _conv_block(conv: nn.Module, norm: nn.Module, pool: nn.Module | None = None) -> list[nn.Module]:
    """conv, batch norm, ReLU and an optional max pool: the unit both of syncnet_python's trunks repeat."""
    return [conv, norm, nn.ReLU()] + ([pool] if pool is not None else [])


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBED_DIM))


class ExpertSyncNet(nn.Module):
    """syncnet_python's `S`: module names and shapes as in its state dict (netcnnaud/netfcaud, netcnnlip/netfclip)."""

    def __init__(self):
        super().__init__()
        c2, b2, c3, b3 = nn.Conv2d, nn.BatchNorm2d, nn.Conv3d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_block(c2(1, 64, 3, padding=1), b2(64), nn.MaxPool2d(1, 1)),
            *_conv_block(c2(64, 192, 3, padding=1), b2(192), nn.MaxPool2d(3, (1, 2))),
            *_conv_block(c2(192, 384, 3, padding=1), b2(384)),
            *_conv_block(c2(384, 256, 3, padding=1), b2(256)),
            *_conv_block(c2(256, 256, 3, padding=1), b2(256), nn.MaxPool2d(3, 2)),
            *_conv_block(c2(256, 512, (5, 4)), b2(512)),
        )
        self.netfcaud = _head()
        self.netfclip = _head()
        self.netcnnlip = nn.Sequential(
            *_conv_block(c3(3, 96, (5, 7, 7), (1, 2, 2)), b3(96), nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv_block(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), b3(256), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256), nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv_block(c3(256, 512, (1, 6, 6)), b3(512)),
        )

    def embed_audio(self, mfcc_windows: Tensor) -> Tensor:
        """(N, 1024) from (N, 1, 13, 20) MFCC windows (`audio_windows`)."""
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_video(self, clips: Tensor) -> Tensor:
        """(N, 1024) from (N, 3, 5, 224, 224) BGR clips with values 0..255 (`expert_frames`, stacked)."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))


def expert_frames(faces: Tensor) -> Tensor:
    """(N, 3, 224, 224) BGR frames with 8-bit values 0..255 from (N, 3, H, W) RGB face crops in [0, 1]: the mouth region."""
    mouths = crop_mouth(faces.float(), FRAME_SIZE).clamp(0, 1)
    return (mouths.flip(1) * 255).round()


def pcm16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] as the int16 values ffmpeg's pcm_s16le writes (x·32768 rounded, clipped)."""
    return np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 32768), -32768, 32767).astype(np.int16)


def audio_mfcc(samples: np.ndarray) -> np.ndarray:
    """(rows, 13) MFCCs of a 16 kHz float waveform, as syncnet_python computes them from the int16 wav."""
    return mfcc(pcm16(samples), SAMPLE_RATE)


def clip_count(frames: int, samples: int) -> int:
    """How many 5-frame windows syncnet_python scores for a video: min(frames, samples // 640) − 5, at least 0."""
    return max(0, min(frames, samples // SAMPLES_PER_FRAME) - CLIP_FRAMES)


def audio_windows(mfccs: np.ndarray, first: int, count: int) -> Tensor:
    """(count, 1, 13, 20) float32 MFCC windows of clips first .. first+count−1 (clip i: rows 4i .. 4i+19)."""
    starts = MFCC_PER_FRAME * np.arange(first, first + count)
    rows = mfccs[starts[:, None] + np.arange(MFCC_WINDOW)[None, :]]  # (count, 20, 13)
    return torch.from_numpy(np.ascontiguousarray(rows.transpose(0, 2, 1))).float()[:, None]


def load_expert_syncnet(weights: PretrainedWeights, key: str = "evaluation.expert_syncnet") -> ExpertSyncNet | Unavailable:
    """The expert SyncNet with the configured syncnet_v2.model weights (strict), or Unavailable when none are configured.

    A configured file that is missing, fails its checksum or is not that state dict raises with the offending key.
    """
    if weights.path is None:
        return Unavailable(f"{_EXPERT}: set {key}.path")
    state = read_state_dict(weights, "expert SyncNet", key)
    net = ExpertSyncNet()
    _check_state(net.state_dict(), state, f"{key}.path={weights.path} is not syncnet_python's syncnet_v2.model state dict")
    net.load_state_dict(state, strict=True)
    return net.requires_grad_(False).eval()


def _check_state(want: dict[str, Tensor], got: dict[str, Tensor], what: str) -> None:
    """One-line ValueError naming the first missing, unexpected or mis-shaped key.

    BatchNorm's num_batches_tracked may be absent: files saved before PyTorch 0.4.1 (the 2018 release) have none,
    and torch's BatchNorm fills it in on loading.
    """
    missing = [k for k in want if k not in got and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in got if k not in want]
    if missing:
        raise ValueError(f"{what}: missing key {missing[0]} ({len(missing)} missing)")
    if unexpected:
        raise ValueError(f"{what}: unexpected key {unexpected[0]} ({len(unexpected)} unexpected)")
    for name, tensor in want.items():
        if name not in got:
            continue
        if not isinstance(got[name], Tensor) or got[name].shape != tensor.shape:
            shape = tuple(got[name].shape) if isinstance(got[name], Tensor) else type(got[name]).__name__
            raise ValueError(f"{what}: key {name} has shape {shape}, expected {tuple(tensor.shape)}")
