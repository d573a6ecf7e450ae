"""LSE-D / LSE-C lip-sync metrics (paper 4.1) from precomputed embeddings, as syncnet_python computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def lse(video_embeddings: Tensor, audio_embeddings: Tensor, max_offset: int = 15) -> dict[str, float | int]:
    """LSE-D, LSE-C and the AV offset of one clip, following syncnet_python's `calc_pdist` / `evaluate`.

    `video_embeddings[i]` embeds mouth frames i..i+4, `audio_embeddings[i]` the audio window starting at
    frame i, both (T, D). For each frame i and shift k in −max_offset..max_offset the Euclidean distance
    (torch's pairwise_distance, eps 1e-6) to audio i+k is taken, with zero embeddings beyond either end
    (syncnet_python pads with zeros); mdist[k] = mean over i. LSE-D = min mdist, LSE-C = median mdist −
    min mdist (torch's lower median), offset = −argmin k (syncnet_python's sign: audio at frame
    i − offset matches video frame i).
    """
    if video_embeddings.dim() != 2 or video_embeddings.shape != audio_embeddings.shape:
        raise ValueError(f"lse wants two (T, D) embeddings of one shape, got {tuple(video_embeddings.shape)} and {tuple(audio_embeddings.shape)}")
    video, audio = video_embeddings.detach().double(), audio_embeddings.detach().double()
    window = 2 * max_offset + 1
    padded = F.pad(audio, (0, 0, max_offset, max_offset))
    dists = torch.stack([F.pairwise_distance(video[i : i + 1].expand(window, -1), padded[i : i + window]) for i in range(len(video))])
    mdist = dists.mean(dim=0)
    minval, minidx = mdist.min(dim=0)
    return {
        "lse_d": float(minval),
        "lse_c": float(mdist.median() - minval),
        "offset": max_offset - int(minidx),
    }
