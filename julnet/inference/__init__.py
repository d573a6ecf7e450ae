"""Inference: dub a video with a speech clip, and say per frame how far to trust the result.

`dub(video, audio, model, out)` (dubbing.py; video and audio in and out in media.py, the paste-back in
composite.py) reuses preprocessing's decode (julnet.data.video.iter_frames at 25 fps), face tracking
(julnet.data.track.track_video: the same dlib pass and subject tracking) and crop boxes (crop_boxes smoothing,
crop_frame), so a face is cropped exactly the way training data was made. Three streaming passes over the video:

1. the tracked subject's landmarks for every source frame (68 points each: small), then smoothed crop boxes;
2. the reference frames (chosen once per video), cropped like training;
3. generation: output frame j shows source frame pingpong(j) (0, 1, .., n-1, n-2, .., 1, 0, 1, ..) when
   the video is shorter than the audio, else frame j (the video is cut to the audio). Frames go through
   the generator and the uncertainty module `batch_frames` at a time and are written as they come. Only the
   mouth region of the generated crop (face.mouth_box: the part the masked source left for the generator to
   repaint) is resized back and blended into the ORIGINAL frame with a feathered mask (1 inside, a linear
   ramp to 0 over `feather` of the region's shorter side at its edge); every other pixel stays the source's.
   Frames without the subject's face, or where it jumped, pass through unchanged and are flagged.

Memory: at most 2 x `batch_frames` source frames are held (a batch, and a block of a backward sweep), plus
the landmarks, the boxes and the audio. Going backwards through a short video (ping-pong), each block of
`batch_frames` frames is read by seeking to a keyframe before it (iter_frames(start=...)), so a backward sweep
decodes the video about once more (plus a GOP per block), not once per block.

Settings come from the `generate` section of the model's config (julnet.config.GenerateConfig), with
`generate.key=value` overrides; the report records the settings used.

Audio: decoded with read_audio and resampled (PyAV's resampler) to 16 kHz mono for the features, whatever
its own rate and channel count; the muxed track is the same audio resampled to 48 kHz mono, trimmed or
padded with silence to exactly the output's length (frames / 25 s).

Report (JSON), per frame, over the mouth region (face.mouth_box) of the crop:
- `sigma_mean`: mean σ = exp(log σ) of the uncertainty module;
- `error_pred_mean`: mean predicted absolute error ε̂ (pixel values in [0, 1]);
- `confidence` = exp(-error_pred_mean / generate.error_scale), in (0, 1]; 1 means no error expected;
- `low_confidence`: confidence < generate.confidence_threshold;
- `epistemic_mean` (only with generate.epistemic_samples K >= 2): mean of the epistemic map, the per-pixel std of
  the generator's output over K reference sets (julnet.evaluation.epistemic; the first set is the output's own);
- `face_found`: False for pass-through frames (their statistics are null, confidence 0, flagged low);
- `tracking_lost`: the tracked subject was not found in the source frame (lost, or no face at all);
- `face_jumped`: the subject was found, but further from the frame before's than a face moves: passed through;
- `source_frame`: the source frame shown; `box`: the crop box (x0, y0, x1, y1) in source pixels, end-exclusive;
  `mouth_box`: the part of it that was repainted and pasted back, the region the statistics cover.
Top level: `video`, `audio`, `output`, `settings` (the generate section used), `summary`, `frames`.
Summary: frame counts, frames without a face, frames where tracking was lost, low-confidence count and fraction (no-face frames count as
low-confidence), mean/min/max/p10/p90 of each statistic over the frames with a face, and `crop_size`, `source_size` and
`output_size` ([width, height], as every size julnet writes): videos are written as yuv420p, which needs even sides, so an odd side is padded
by repeating its last row/column (every source pixel is kept; cropping would drop one).
"""

from julnet.inference.composite import heat_map, paste
from julnet.inference.dubbing import dub
from julnet.inference.media import choose_codecs, pingpong
from julnet.models.trained import load_model

__all__ = ["choose_codecs", "dub", "heat_map", "load_model", "paste", "pingpong"]
