"""A stand-in for DINet's models/DINet.py, NOT DINet: a tiny network with the same constructor and forward signature,
so tests can run benchmarks/dinet_ratio.py without the real code (which julnet neither ships nor downloads). Like the
real file it imports its batch norm from the `sync_batchnorm` package, which the benchmark supplies when missing."""

import torch
from sync_batchnorm import SynchronizedBatchNorm2d as BatchNorm2d
from torch import nn


class DINet(nn.Module):
    def __init__(self, source_channel, ref_channel, audio_channel):
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(source_channel + ref_channel, 8, 3, padding=1), BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.audio = nn.Linear(audio_channel, 3)

    def forward(self, source_img, ref_img, audio_feature):
        image = self.image(torch.cat([source_img, ref_img], 1))
        return torch.sigmoid(image + self.audio(audio_feature.mean(2))[..., None, None])
