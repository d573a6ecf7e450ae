"""What a command reads and writes, checked before any work: no output is an input or another output, none
replaces an existing file unless the user asks (--overwrite), and every output's folder takes new files.

Local paths and file:// URIs compare by their real path (symlinks, `..` and relative spellings resolved) and, for
files that exist, by device and inode (hard links: what os.path.samefile compares); s3:// URIs by their text, with
the scheme's case and repeated or trailing slashes normalised. MLflow URIs (models:/, runs:/) and other schemes name
no file here and match nothing. Every command that writes files uses this module: generate (and its batch job),
evaluate and preprocess. Failures are one-line BadOutputErrors.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from julnet import storage
from julnet.artifacts import MLFLOW_SCHEMES
from julnet.errors import BadOutputError

PathLike = str | os.PathLike[str]
Paths = Mapping[str, PathLike | None]
"""What each path is, as a message names it ("video", "report"), to the path (None: not given)."""


def location(uri: PathLike) -> str | None:
    """One spelling per place: the real path of a local path or file:// URI, the normalised s3:// or gs:// URI; None for
    URIs that name no file here (models:/, runs:/, http://, file:// on another host)."""
    text = os.fspath(uri)
    if text.startswith(MLFLOW_SCHEMES):
        return None
    if not storage.is_local(text):
        return storage.canonical(text)  # None for http:// and other schemes that name no file here
    try:
        local = storage.local_path(text)
    except ValueError:
        return None
    return os.path.realpath(local) if local is not None else None


def _keys(uri: PathLike) -> set[object]:
    """The keys a file is known by: its location, and for an existing local file its (device, inode)."""
    where = location(uri)
    if where is None:
        return set()
    keys: set[object] = {where}
    if storage.is_local(where):
        with contextlib.suppress(OSError):
            stat = os.stat(where)
            keys.add((stat.st_dev, stat.st_ino))
    return keys


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether `a` and `b` name the same file or folder, however each is spelled."""
    return bool(_keys(a) & _keys(b))


def inside(inner: PathLike, outer: PathLike) -> bool:
    """Whether `inner` is `outer` or lies below it (folders or prefixes, by location)."""
    a, b = location(inner), location(outer)
    return a is not None and b is not None and (same_file(inner, outer) or a.startswith(b.rstrip("/") + "/"))


def check_outputs(reads: Paths, writes: Paths, overwrite: bool = False) -> None:
    """Refuse, in one line, an output (of `writes`) that is the same file as an input (of `reads`) or as another
    output, that is a folder, or that exists and `overwrite` is not set. Inputs may name one file twice."""
    seen: dict[object, tuple[str, PathLike, bool]] = {}
    for what, path in _given(reads):
        for key in _keys(path):
            seen.setdefault(key, (what, path, True))
    for what, path in _given(writes):
        keys = _keys(path)
        clash = next((seen[key] for key in keys if key in seen), None)
        if clash is not None:
            other, other_path, read = clash
            why = "writing it would destroy that input" if read else "each output needs a path of its own"
            raise BadOutputError(f"the {what} {path} is the same file as the {other} {other_path}: {why}")
        seen.update((key, (what, path, False)) for key in keys)
        local = storage.local_path(os.fspath(path))
        if local is not None and local.is_dir():
            raise BadOutputError(f"the {what} {path} is a folder; give a file name")
        if not overwrite and (os.path.lexists(local) if local is not None else storage.exists(os.fspath(path))):
            raise BadOutputError(f"the {what} {path} already exists; --overwrite replaces it")


@contextlib.contextmanager
def output_folders(writes: Paths) -> Iterator[None]:
    """Create the missing folders of the local outputs and check that each takes a new file (by creating and
    removing one) before the block runs; if anything fails, here or in the block, remove the folders made here."""
    made: list[Path] = []
    try:
        for what, path in _given(writes):
            local = storage.local_path(os.fspath(path))
            if local is None:
                continue
            folder = local.parent
            made += reversed([p for p in (folder, *folder.parents) if not os.path.lexists(p)])
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                blocker = next((p for p in local.parents if p.exists() and not p.is_dir()), None)
                why = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or type(exc).__name__)
                raise BadOutputError(f"cannot create the folder of the {what} {path}: {why}") from None
            try:
                fd, probe = tempfile.mkstemp(prefix=storage.TEMP_PREFIX, dir=folder)
            except OSError as exc:
                raise BadOutputError(f"cannot write the {what} {path}: its folder takes no new file ({exc.strerror or type(exc).__name__})") from None
            os.close(fd)
            os.unlink(probe)
        yield
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never a file the block or anyone else put there
        raise


def _given(paths: Paths) -> list[tuple[str, PathLike]]:
    return [(what, path) for what, path in paths.items() if path is not None]
