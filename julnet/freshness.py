"""Is there new raw data since the champion was trained? A fingerprint of a raw prefix, and the lineage it is checked against.

"New data" means: the files that preprocessing reads under the raw prefix (every file whose name does not start with
a dot, sidecars included), listed as (key relative to the prefix, size, ETag), differ from the list a registered
version of the model was trained on. S3 gives each object's ETag (a content hash for single-part uploads); a local
file's "ETag" is its modification time in nanoseconds, so touching or copying a file counts as new. A `.jsonl`
listing is fingerprinted by its own bytes' size and ETag: the files it names are taken as immutable.

Retraining runs tag their MLflow run with the fingerprint (`julnet.raw*`); registration copies those tags onto the
model version (julnet.registry.lineage). The check compares the current fingerprint with the champion's, then with
the versions whose promotion was decided, so data already tried and not promoted is not retrained every night either
(a version registered by a run that died before its promotion does not count: the next run finishes it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from mlflow import MlflowClient

from julnet import storage
from julnet.registry import TAG_RAW, TAG_RAW_FILES, TAG_RAW_SHA, alias_version

CHAMPION = "champion"


@dataclass(frozen=True)
class RawObject:
    """One raw input file as the fingerprint sees it."""

    key: str  # relative to the raw prefix, "/"-separated
    size: int
    etag: str


@dataclass(frozen=True)
class Freshness:
    """The outcome of the check: whether to retrain, why, and the fingerprint to record if we do."""

    new: bool
    reason: str
    raw: str
    fingerprint: str
    files: int
    champion: str  # the champion version when checked, or ""

    def tags(self) -> dict[str, str]:
        """The run tags that record which raw data a training run was made from."""
        return {TAG_RAW: self.raw, TAG_RAW_SHA: self.fingerprint, TAG_RAW_FILES: str(self.files)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def raw_objects(uri: str) -> list[RawObject]:
    """The files under a raw folder or `s3://` prefix (or a `.jsonl` listing itself), sorted by key."""
    if uri.endswith(".jsonl"):
        parent, _, name = uri.rstrip("/").rpartition("/")
        found = [o for o in _list(parent) if o.key == name]
    else:
        found = _list(uri)
    if not found:
        raise FileNotFoundError(f"no raw files under {uri}")
    return sorted(found, key=lambda o: o.key)


def _list(uri: str) -> list[RawObject]:
    """Every non-hidden file below `uri`, as preprocessing's discovery sees them (S3: ETags; elsewhere: mtimes)."""
    return [RawObject(v.key, v.size, v.tag) for v in storage.list_versions(uri) if not PurePosixPath(v.key).name.startswith(".")]


def fingerprint(objects: list[RawObject]) -> str:
    """sha256 over the sorted (key, size, ETag) lines: the same files give the same hash wherever the prefix lives."""
    lines = "".join(f"{o.key}\t{o.size}\t{o.etag}\n" for o in sorted(objects, key=lambda o: o.key))
    return hashlib.sha256(lines.encode()).hexdigest()


def check(client: MlflowClient, model_name: str, raw_uri: str) -> Freshness:
    """Compare the raw prefix with the data the champion (then any other version) of `model_name` was trained on."""
    from julnet.promotion import TAG_DECISION  # here: promotion imports the evaluation suite (torch)

    objects = raw_objects(raw_uri)
    fp = fingerprint(objects)
    champion = alias_version(client, model_name, CHAMPION)
    here = f"{len(objects)} files under {raw_uri} (sha256 {fp[:12]})"
    done = dict(new=False, raw=raw_uri, fingerprint=fp, files=len(objects), champion=champion.version if champion else "")
    if champion is not None and champion.tags.get(TAG_RAW_SHA) == fp:
        return Freshness(reason=f"no new data: the {here} are what champion models:/{model_name}/{champion.version} was trained on", **done)
    tried = [v for v in client.search_model_versions(f"name='{model_name}' and tags.`{TAG_RAW_SHA}` = '{fp}'") if TAG_DECISION in v.tags]
    if tried:
        last = max(tried, key=lambda v: int(v.version))
        why = json.loads(last.tags[TAG_DECISION]).get("reason", "")
        return Freshness(reason=f"no new data: models:/{model_name}/{last.version} was already trained on the {here} and not promoted ({why})", **done)
    return Freshness(**{**done, "new": True, "reason": f"new data: {here}; {_champion_saw(champion, model_name)}"})


def _champion_saw(champion: Any, model_name: str) -> str:
    """What the champion was trained on, for the reason line."""
    if champion is None:
        return f"{model_name} has no champion yet"
    recorded = champion.tags.get(TAG_RAW_SHA)
    if not recorded:
        return f"champion models:/{model_name}/{champion.version} records no raw fingerprint (it was not made by a retraining run)"
    return (f"champion models:/{model_name}/{champion.version} was trained on {champion.tags.get(TAG_RAW_FILES, '?')} files under "
            f"{champion.tags.get(TAG_RAW, '?')} (sha256 {recorded[:12]})")
