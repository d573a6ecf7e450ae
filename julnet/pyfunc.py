"""The MLflow pyfunc flavour of a trained model: `mlflow.pyfunc.load_model("models:/julnet@champion").predict(...)`
dubs videos, so a registered model is usable by anything that speaks MLflow.

predict takes one request or a list of them (dicts, or a pandas DataFrame with those columns):
- `video`, `audio`: a path or URI-less local file name (str / PathLike) or the file's bytes;
- `out` (optional): where to write the dubbed MP4 (never over an input; over an existing file only with
  `overwrite`: true); without it the video comes back as bytes;
- `uncertainty_video` (optional, bool): also return the σ heat-map video (bytes, or next to `out`).
It returns one dict per request: `video` (bytes or the written path), `uncertainty_video` when asked,
`summary` (the per-video statistics) and `frames` (the per-frame uncertainty entries of julnet generate's report).
The device comes from `model_config={"device": "cuda"}` at load time (default cpu). Training writes such a model with
julnet.training.export.log_pyfunc.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from julnet.inference import dub, load_model
from julnet.training.export import CHECKPOINT_ARTIFACT


class DubbingModel(mlflow.pyfunc.PythonModel):
    """A julnet checkpoint behind MLflow's pyfunc interface."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.device = (context.model_config or {}).get("device", "cpu")
        self.model = load_model(context.artifacts[CHECKPOINT_ARTIFACT], self.device, folded=True)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: Any, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [self._dub(request) for request in _requests(model_input)]

    def _dub(self, request: dict[str, Any]) -> dict[str, Any]:
        samples = int(request.get("epistemic_samples") or 0)  # generate.epistemic_samples: K reference sets, 0 = off
        with tempfile.TemporaryDirectory(prefix="julnet-predict-") as tmp:
            video = _as_file(request["video"], Path(tmp) / "video")
            audio = _as_file(request["audio"], Path(tmp) / "audio")
            out = Path(request["out"]) if request.get("out") else Path(tmp) / "out.mp4"
            extra = {name: out.with_name(f"{out.stem}.{suffix}.mp4") for name, suffix in HEAT_VIDEOS.items() if request.get(name)}
            report = dub(video, audio, self.model, out, uncertainty_video=extra.get("uncertainty_video"), epistemic_video=extra.get("epistemic_video"),
                         device=self.device, overrides=[f"generate.epistemic_samples={samples}"] if samples else (),
                         overwrite=bool(request.get("overwrite")))
            result: dict[str, Any] = {"summary": report["summary"], "frames": report["frames"]}
            keep = bool(request.get("out"))
            for name, path in {"video": out, **extra}.items():
                result[name] = str(path) if keep else path.read_bytes()
        return result


HEAT_VIDEOS = {"uncertainty_video": "uncertainty", "epistemic_video": "epistemic"}  # request key -> suffix beside `out`


def _requests(model_input: Any) -> list[dict[str, Any]]:
    """One dict per request from a dict, a list of dicts or a DataFrame; a clear error for anything else."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        model_input = model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        model_input = [model_input]
    if not isinstance(model_input, list) or not all(isinstance(r, dict) for r in model_input):
        raise TypeError(f"predict wants a dict, a list of dicts or a DataFrame with columns video and audio, got {type(model_input).__name__}")
    for i, request in enumerate(model_input):
        missing = [k for k in ("video", "audio") if request.get(k) is None]
        if missing:
            raise ValueError(f"request {i} lacks {' and '.join(missing)} (a path or the file's bytes)")
    return model_input


def _as_file(value: str | os.PathLike[str] | bytes, scratch: Path) -> Path:
    """A local file for a path or for raw bytes (written to `scratch`)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        scratch.write_bytes(bytes(value))
        return scratch
    return Path(value)
