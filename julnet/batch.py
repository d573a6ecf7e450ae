"""Batch inference: dub every (video, audio) pair of a manifest into object storage, spread over Ray Data workers.

Manifest: JSON Lines at any storage URI, one pair per line (blank lines are skipped):

    {"video": "s3://raw/alice.mp4", "audio": "s3://speech/hello.wav", "name": "alice-hello"}

`video` and `audio` are paths, file:// or s3:// URIs; relative paths are read from the manifest's folder.
`name` (optional, default "<video stem>-<audio stem>") names the pair's outputs: letters, digits, '.', '_'
and '-', unique within the manifest. A line that breaks these rules stops the job before anything runs, with
a one-line error naming the line.

Outputs, next to each other under the output prefix:

    <output>/<name>/dubbed.mp4    the dubbed video (julnet.inference.dub)
    <output>/<name>/sigma.mp4     the σ heat-map video, when asked for
    <output>/<name>/epistemic.mp4 the epistemic heat-map video, when asked for (generate.epistemic_samples >= 2)
    <output>/<name>/report.json   the per-frame report; uploaded last, so its presence marks the pair done
    <output>/summary.json         the latest run: counts, and every failed pair with its one-line reason

Each file is uploaded atomically (julnet.storage). A pair whose video or audio is an output of the job (or the
manifest or model one) stops the job before anything runs (check_paths). A re-run skips the pairs that are done
and retries the others; a pair with bad input (unreadable video, no speech, no face, missing file, ...) is recorded as failed
with its reason and never stops the other pairs. Each Ray Data actor loads the model once.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from julnet import storage
from julnet.config import check_epistemic_video, override_config
from julnet.errors import GenerateError
from julnet.paths import check_outputs
from julnet.progress import Progress, quiet_ray, rate_text
from julnet.table import aligned

log = logging.getLogger(__name__)

OUTPUT_FILES = {"video": "dubbed.mp4", "sigma": "sigma.mp4", "epistemic": "epistemic.mp4", "report": "report.json"}
SUMMARY_FILE = "summary.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_KEYS = {"video", "audio", "name"}


class ManifestError(ValueError):
    """A batch manifest that cannot be used; the message names the manifest and the line."""


@dataclass(frozen=True)
class Pair:
    """One line of the manifest: the video to dub, the speech to dub it with, and the outputs' name."""

    name: str
    video: str
    audio: str


@dataclass(frozen=True)
class BatchResult:
    """What a batch run did: one row per pair it ran (dub_pair's rows) and the names of the pairs already done."""

    rows: list[dict[str, Any]]
    skipped: list[str]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]


def read_pairs(manifest_uri: str) -> list[Pair]:
    """The pairs of a JSON Lines manifest, validated (ManifestError names the first bad line)."""
    try:
        text = storage.read_text(manifest_uri)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {manifest_uri}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{manifest_uri}: not a UTF-8 text file (expected JSON Lines)") from None
    pairs: list[Pair] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest_uri}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise ManifestError(f'{where}: expected a JSON object like {{"video": ..., "audio": ..., "name": ...}}')
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            raise ManifestError(f"{where}: unknown key {unknown[0]!r} (expected video, audio and optionally name)")
        for key in ("video", "audio"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise ManifestError(f"{where}: {key!r} must be a non-empty path or URI")
        video, audio = (storage.relative_to(manifest_uri, item[key]) for key in ("video", "audio"))
        name = item.get("name", f"{PurePosixPath(video).stem}-{PurePosixPath(audio).stem}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ManifestError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (not starting with '.', '_' or '-')")
        if name in lines:
            raise ManifestError(f"{where}: name {name!r} is already used on line {lines[name]}; give the pairs distinct names")
        lines[name] = number
        pairs.append(Pair(name=name, video=video, audio=audio))
    if not pairs:
        raise ManifestError(f"{manifest_uri}: no pairs (expected one JSON object per line)")
    return pairs


def outputs(output_uri: str, name: str) -> dict[str, str]:
    """URIs of a pair's output files (keys of OUTPUT_FILES)."""
    return {key: storage.join(output_uri, name, file) for key, file in OUTPUT_FILES.items()}


def written(uncertainty_video: bool, epistemic_video: bool) -> list[str]:
    """The keys of OUTPUT_FILES a pair writes: its video and report, and the heat-map videos asked for."""
    return ["video", "report"] + ["sigma"] * uncertainty_video + ["epistemic"] * epistemic_video


def check_paths(pairs: list[Pair], manifest_uri: str, output_uri: str, model: str, uncertainty_video: bool, epistemic_video: bool) -> None:
    """Refuse, in one line, a job that would write over one of its inputs: a pair's video or audio, the manifest or
    the model that is also a pair's output or the summary (julnet.paths). Existing outputs are the job's own, resumed."""
    reads = {"manifest": manifest_uri, "model": model}
    writes = {"summary": storage.join(output_uri, SUMMARY_FILE)}
    for pair in pairs:
        reads.update({f"video of pair {pair.name}": pair.video, f"audio of pair {pair.name}": pair.audio})
        files = outputs(output_uri, pair.name)
        writes.update({f"{OUTPUT_FILES[key]} of pair {pair.name}": files[key] for key in written(uncertainty_video, epistemic_video)})
    check_outputs(reads, writes, overwrite=True)


def split_done(pairs: list[Pair], output_uri: str, uncertainty_video: bool, epistemic_video: bool) -> tuple[list[Pair], list[Pair]]:
    """(pairs to run, pairs already done), from one listing of the output prefix."""
    present = set(storage.list_files(output_uri))
    needed = written(uncertainty_video, epistemic_video)
    done = [p for p in pairs if all(outputs(output_uri, p.name)[key] in present for key in needed)]
    names = {p.name for p in done}
    return [p for p in pairs if p.name not in names], done


def dub_pair(
    pair: Pair,
    model: Any,
    output_uri: str,
    *,
    overrides: Sequence[str] = (),
    uncertainty_video: bool = False,
    epistemic_video: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Dub one pair and upload its outputs (the report last); a row with its status ("done" or "failed"),
    one-line reason and message, frames and timings. Bad input is a failed row, never an exception."""
    from julnet.inference import dub

    start = time.perf_counter()
    row: dict[str, Any] = {**asdict(pair), "status": "failed", "reason": "", "message": "", "frames": 0, "generate_fps": 0.0}
    with tempfile.TemporaryDirectory(prefix="julnet-pair-") as tmp:
        local: dict[str, str] = {}
        try:
            video, audio = (_fetch(uri, Path(tmp) / kind, local) for kind, uri in (("video", pair.video), ("audio", pair.audio)))
            sigma = Path(tmp) / OUTPUT_FILES["sigma"] if uncertainty_video else None
            epistemic = Path(tmp) / OUTPUT_FILES["epistemic"] if epistemic_video else None
            result = dub(video, audio, model, Path(tmp) / OUTPUT_FILES["video"], uncertainty_video=sigma, epistemic_video=epistemic,
                         device=device, overrides=overrides)
        except FileNotFoundError as exc:
            row.update(reason="not_found", message=f"not found: {exc.filename or exc}")
        except GenerateError as exc:
            row.update(reason=exc.reason, message=_uris(str(exc), local))
        except Exception as exc:  # noqa: BLE001 - one pair's crash is recorded, and the job still exits non-zero
            log.error("pair %s crashed:\n%s", pair.name, traceback.format_exc())
            row.update(reason="error", message=_uris(f"{type(exc).__name__}: {exc}".splitlines()[0], local))
        else:
            uris = outputs(output_uri, pair.name)
            storage.upload_file(Path(tmp) / OUTPUT_FILES["video"], uris["video"])
            for key, path in (("sigma", sigma), ("epistemic", epistemic)):
                if path is not None:
                    storage.upload_file(path, uris[key])
            result.update(name=pair.name, video=pair.video, audio=pair.audio, output=uris["video"], uncertainty_video=uris["sigma"] if sigma else None,
                          epistemic_video=uris["epistemic"] if epistemic else None)
            storage.write_text(uris["report"], json.dumps(result, indent=1))
            summary = result["summary"]
            row.update(status="done", frames=summary["frames"], generate_fps=summary["generate_fps"])
    row["seconds"] = time.perf_counter() - start
    return row


def _fetch(uri: str, directory: Path, local: dict[str, str]) -> Path:
    """A local path holding the file at `uri`: the file itself when it is local, else a copy in `directory`."""
    if not storage.exists(uri):
        raise FileNotFoundError(2, "not found", uri)
    path = storage.local_path(uri) or storage.copy_to_local(uri, directory)
    local[str(path)] = uri
    return Path(path)


def _uris(message: str, local: dict[str, str]) -> str:
    """`message` with local copies' paths replaced by the URIs they came from."""
    for path, uri in local.items():
        message = message.replace(path, uri)
    return message


class PairDubber:
    """Ray Data callable class: loads the model once per actor, then dubs one manifest row per call."""

    def __init__(self, model: str, output_uri: str, overrides: Sequence[str], uncertainty_video: bool, epistemic_video: bool, device: str) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from julnet.inference import load_model

        self.model = load_model(model, device, folded=True)
        self.kwargs = {"overrides": list(overrides), "uncertainty_video": uncertainty_video, "epistemic_video": epistemic_video, "device": device}
        self.output_uri = output_uri

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        pair = Pair(name=row["name"], video=row["video"], audio=row["audio"])
        return dub_pair(pair, self.model, self.output_uri, **self.kwargs)


def run_batch(
    manifest_uri: str,
    output_uri: str,
    model: str,
    *,
    overrides: Sequence[str] = (),
    uncertainty_video: bool = False,
    epistemic_video: bool = False,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    device: str = "cpu",
) -> BatchResult:
    """Dub the manifest's pending pairs on `workers` Ray Data actors, log progress with rate and ETA, and write the
    summary. Bad manifests, an input that is also an output (check_paths), models and overrides raise before Ray
    is started (or attached: ray.init() if needed)."""
    import ray
    import ray.data

    from julnet.inference import load_model

    pairs = read_pairs(manifest_uri)
    check_paths(pairs, manifest_uri, output_uri, model, uncertainty_video, epistemic_video)
    cfg = load_model(model)[0]  # a missing or unreadable model fails here, once
    settings = override_config(cfg, overrides, sections=("generate",)).generate
    if epistemic_video:
        check_epistemic_video(settings)
    todo, done = split_done(pairs, output_uri, uncertainty_video, epistemic_video)
    log.info("batch generate: %d pairs, %d already done, %d to run on %d workers -> %s", len(pairs), len(done), len(todo), workers, output_uri)
    rows: list[dict[str, Any]] = []
    if todo:
        quiet_ray()  # the [generate] lines below report progress; Ray Data's bars only on a terminal
        if not ray.is_initialized():
            ray.init()
        dataset = ray.data.from_items([asdict(p) for p in todo], override_num_blocks=len(todo)).map(
            PairDubber,
            fn_constructor_kwargs={
                "model": model, "output_uri": output_uri, "overrides": list(overrides),
                "uncertainty_video": uncertainty_video, "epistemic_video": epistemic_video, "device": device,
            },
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker or None,
        )
        lines, frames = Progress("[generate]", len(todo), "pairs", logger=log), 0
        for row in dataset.iter_rows():
            rows.append(dict(row))
            frames += row["frames"]
            what = f"{row['frames']} frames" if row["status"] == "done" else f"failed: {row['reason']}"
            lines.update(advance=1, force=row["status"] != "done", note=f"last {row['name']} ({what})")
        failed = sum(r["status"] != "done" for r in rows)
        lines.close(f"{failed} failed, {frames} frames at {rate_text(frames / max(lines.elapsed(), 1e-9), 'frames')}")
    result = BatchResult(rows=rows, skipped=[p.name for p in done])
    summary = {
        "manifest": manifest_uri, "output": output_uri, "model": model, "pairs": len(pairs),
        "done": len(done) + sum(r["status"] == "done" for r in rows), "skipped": len(done),
        "failed": len(result.failed), "failures": result.failed,
    }
    storage.write_text(storage.join(output_uri, SUMMARY_FILE), json.dumps(summary, indent=1))
    return result


def format_table(result: BatchResult) -> str:
    """A plain-text table of the pairs run (name, status, frames, frames/s, reason) and the totals."""
    header = ("name", "status", "frames", "frames/s", "reason")
    lines = [header] + [
        (r["name"], r["status"], str(r["frames"]), f"{r['generate_fps']:.1f}" if r["status"] == "done" else "-", r["message"] or "-")
        for r in result.rows
    ]
    text = aligned(lines)
    done = sum(r["status"] == "done" for r in result.rows)
    return f"{text}\n{done} done, {len(result.failed)} failed, {len(result.skipped)} skipped (already done)"
