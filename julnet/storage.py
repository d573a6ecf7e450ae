"""Storage: every input and output of the project is a URI, a local path, `file://...`, `s3://bucket/key` or
`gs://bucket/key`; this module is the only one that knows the schemes (and the only one that imports boto3).

Reads, listings, copies and deletes go through pyarrow filesystems: pyarrow already reads the Parquet shards and
is what Ray Data and Ray Train take, so one abstraction serves julnet and Ray alike (fsspec would add s3fs, gcsfs
and their async stacks for the same calls). Writes are atomic: locally the data goes to a hidden temporary file in
the target directory that is fsynced and renamed into place; on S3 it is uploaded with boto3 as one PUT, or as a
multipart upload that is completed on success and aborted on error, because pyarrow's S3 output streams cannot be
aborted from Python and publish whatever was written when they are closed after an error; on GCS it is written
under a hidden temporary name beside the target and moved into place on success (deleted on error).

The S3 endpoint, region and credentials come from the standard AWS environment variables
(`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_REGION` or `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), so AWS, MinIO, Ceph and moto all work unchanged. GCS uses Google's
default credentials (GOOGLE_APPLICATION_CREDENTIALS, or the node's service account); `gs://` runs the same code as
`s3://` here but has not been tried against a real bucket.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, NamedTuple
from urllib.parse import unquote, urlsplit

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from julnet.config import ConfigError
from julnet.redact import redact

TEMP_PREFIX = ".julnet-tmp-"
"""Name prefix of in-progress local writes; `list_files` never returns such files."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOCAL = pafs.LocalFileSystem()
# S3 needs at least 5 MiB in every part but the last, and allows 10,000 parts: objects up to ~80 GiB.
_PART_SIZE = 8 * 1024 * 1024


class _S3Settings(NamedTuple):
    """Everything that selects an S3 service and identity; the cache key of filesystems and clients."""

    endpoint: str | None
    region: str | None
    access_key: str | None
    secret_key: str | None
    session_token: str | None


def _scheme(uri: str) -> str:
    """The lower-case scheme of `uri`, or "" for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


_OBJECT_SCHEMES = ("s3", "gs")


def is_local(uri: str) -> bool:
    """Whether `uri` is a path or file:// URI (a file here), not an object in a bucket."""
    return _scheme(uri) in ("", "file")


def unsupported_scheme(uri: str) -> str | None:
    """The scheme of `uri` when this module cannot read it (e.g. "http"), else None."""
    scheme = _scheme(uri)
    return None if scheme in ("", "file", *_OBJECT_SCHEMES) else scheme


def _is_s3(uri: str) -> bool:
    return _scheme(uri) == "s3"


def canonical(uri: str) -> str | None:
    """One spelling of an object URI (lower-case scheme, no doubled or trailing slashes); None for anything else."""
    scheme = _scheme(uri)
    if scheme in _OBJECT_SCHEMES:
        return f"{scheme}://" + re.sub("/+", "/", uri.split("://", 1)[1]).strip("/")
    return None


def _path(uri: str) -> str:
    """The path of `uri` within its filesystem: the local path, or `bucket/key` on S3."""
    scheme = _scheme(uri)
    if scheme == "":
        return uri
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file URI on another host is not supported: {uri}")
        return unquote(parts.path)
    if scheme in _OBJECT_SCHEMES:
        path = uri.split("://", 1)[1].strip("/")
        if not path:
            raise ValueError(f"{scheme}:// URI names no bucket: {uri}")
        return path
    raise ValueError(f"unsupported URI scheme {scheme!r} in {uri} (use a path, file://, s3:// or gs://)")


def _bucket_key(uri: str) -> tuple[str, str]:
    """The bucket and key of an S3 object URI."""
    bucket, _, key = _path(uri).partition("/")
    if not key:
        raise ValueError(f"S3 URI names a bucket, not an object: {uri}")
    return bucket, key


def _not_found(uri: str) -> FileNotFoundError:
    """The error for a missing object, naming its URI (also in `.filename`)."""
    return FileNotFoundError(errno.ENOENT, "no such file or directory", uri)


def _s3_settings(endpoint_url: str | None = None) -> _S3Settings:
    """S3 connection settings from the AWS environment variables; `endpoint_url` overrides the endpoint."""
    env = os.environ.get
    return _S3Settings(
        endpoint=endpoint_url or env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL") or None,
        region=env("AWS_REGION") or env("AWS_DEFAULT_REGION") or None,
        access_key=env("AWS_ACCESS_KEY_ID") or None,
        secret_key=env("AWS_SECRET_ACCESS_KEY") or None,
        session_token=env("AWS_SESSION_TOKEN") or None,
    )


@functools.cache
def _s3_filesystem(settings: _S3Settings) -> pafs.S3FileSystem:
    """One pyarrow S3 filesystem per endpoint, region and credentials (pyarrow ignores AWS_ENDPOINT_URL).

    The credentials are not passed in: pyarrow reads them from the AWS environment itself, so the filesystem
    carries none when Ray Tune pickles it into its experiment state (tuner.pkl, search_gen_state-*.json).
    """
    return pafs.S3FileSystem(
        region=settings.region,
        endpoint_override=settings.endpoint,
    )


@functools.cache
def _gcs_filesystem() -> pafs.GcsFileSystem:
    """pyarrow's GCS filesystem with Google's default credentials (looked up at the first request). Retries stop
    after a minute (pyarrow's default is 15), so an unreachable service or missing credentials fail, not hang."""
    return pafs.GcsFileSystem(retry_time_limit=timedelta(seconds=60))


@functools.cache
def _s3_client(settings: _S3Settings) -> BaseClient:
    """One boto3 S3 client per endpoint, region and credentials, for the uploads pyarrow cannot abort."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
    )


def filesystem(uri: str, endpoint_url: str | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding `uri` and the path within it, so any pyarrow API can take a URI."""
    path = _path(uri)
    if _is_s3(uri):
        return _s3_filesystem(_s3_settings(endpoint_url)), path
    if _scheme(uri) == "gs":
        return _gcs_filesystem(), path
    return _LOCAL, path


def join(uri: str, *parts: str) -> str:
    """`uri` extended by `parts` with "/" separators, the same for paths, file:// and s3:// URIs."""
    for part in parts:
        part = part.strip("/")
        if part:
            uri = (uri if uri.endswith("/") else uri + "/") + part
    return uri


def local_path(uri: str) -> Path | None:
    """The local path that `uri` (a path or file:// URI) names, or None for object storage."""
    return Path(_path(uri)) if is_local(uri) else None


def require_durable(uri: str, what: str, fix: str = "give the job an s3:// URI, or a shared path outside its working directory") -> None:
    """Refuse, before any work, a `what` whose `uri` would vanish with a submitted Ray job's working copy."""
    if _lost_with_job(uri):
        raise ConfigError(f"{what}: {uri} is inside this Ray job's temporary working directory and would be lost when the job ends; {fix}")


def _lost_with_job(uri: str) -> bool:
    """Whether `uri` (a path, file:// or sqlite:/// URI) lies in the temporary copy of `--working-dir` that a
    submitted Ray job runs in (its current directory, deleted when the job ends)."""
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # set by Ray's job supervisor for the job's driver
    if not job or not json.loads(job).get("runtime_env", {}).get("working_dir"):
        return False
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri
    return _scheme(path) in ("", "file") and Path(_path(path)).resolve().is_relative_to(Path.cwd().resolve())


def relative_to(listing_uri: str, uri: str) -> str:
    """`uri` as written inside the listing file `listing_uri`: URIs and absolute paths as they are, relative
    paths from the listing's folder (so a listing and its files can move together)."""
    if _scheme(uri) or uri.startswith("/"):
        return uri
    return join(listing_uri.rsplit("/", 1)[0] if "/" in listing_uri else ".", uri)


def exists(uri: str) -> bool:
    """Whether a file or directory (an S3 prefix or bucket) exists at `uri`."""
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


@contextlib.contextmanager
def open_input(uri: str) -> Iterator[pa.NativeFile]:
    """A seekable binary stream over the file at `uri`, read lazily so large files need not fit in memory."""
    fs, path = filesystem(uri)
    try:
        stream = fs.open_input_file(path)
    except FileNotFoundError as exc:
        raise _not_found(uri) from exc
    with stream:
        yield stream


def read_bytes(uri: str) -> bytes:
    """The whole content of the file at `uri`."""
    with open_input(uri) as stream:
        return stream.read()


def read_text(uri: str) -> str:
    """The whole content of the UTF-8 text file at `uri`."""
    return read_bytes(uri).decode("utf-8")


@contextlib.contextmanager
def open_output(uri: str) -> Iterator[BinaryIO]:
    """A binary stream whose data appears under `uri` only when the block ends without an exception."""
    if _is_s3(uri):
        with _s3_output(uri) as stream:
            yield stream
    elif is_local(uri):
        with _local_output(_path(uri)) as stream:
            yield stream
    else:
        with _moved_output(uri) as stream:
            yield stream


def discard_partial(uri: str) -> None:
    """Remove what an interrupted `open_output(uri)` left beside it (a hidden file or object; S3 keeps nothing)."""
    if _is_s3(uri):
        return
    fs, path = filesystem(uri)
    name = posixpath.basename(path)
    for info in fs.get_file_info(pafs.FileSelector(posixpath.dirname(path) or ".", allow_not_found=True)):
        if info.base_name.startswith(TEMP_PREFIX) and info.base_name.endswith(f"-{name}"):
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(info.path)


def write_bytes(uri: str, data: bytes) -> None:
    """Atomically create or replace the file at `uri` with `data`."""
    with open_output(uri) as stream:
        stream.write(data)


def write_text(uri: str, text: str) -> None:
    """Atomically create or replace the file at `uri` with `text` as UTF-8, redacted (julnet.redact): reports,
    manifests and configs never carry credentials."""
    write_bytes(uri, redact(text).encode("utf-8"))


@contextlib.contextmanager
def _local_output(path: str) -> Iterator[BinaryIO]:
    """Write to a hidden file beside `path`, fsync it and rename it into place, so readers never see a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}")
    try:
        with open(temp, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _moved_output(uri: str) -> Iterator[BinaryIO]:
    """Write to a hidden object beside `uri` and move it into place on success (object stores without an abortable
    upload in Python: GCS); on failure the hidden object is deleted."""
    fs, path = filesystem(uri)
    parent, _, name = path.rpartition("/")
    temp = f"{parent}/{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"
    try:
        with fs.open_output_stream(temp) as stream:
            yield stream  # type: ignore[misc]  # a pyarrow NativeFile, used as a binary stream
        fs.move(temp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(temp)
        raise


@contextlib.contextmanager
def _s3_output(uri: str) -> Iterator[BinaryIO]:
    """Upload what the block writes to `uri` when it succeeds; abort the upload when it fails."""
    bucket, key = _bucket_key(uri)
    upload = _S3Upload(_s3_client(_s3_settings()), bucket, key)
    try:
        yield upload  # type: ignore[misc]  # a RawIOBase, used as a binary stream
        upload.commit()
    except BaseException as exc:
        upload.abort()
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise _not_found(uri) from exc
        raise
    finally:
        upload.close()


class _S3Upload(io.RawIOBase):
    """A write-only stream sent to S3 in parts; nothing is visible under the key before `commit`."""

    def __init__(self, client: BaseClient, bucket: str, key: str) -> None:
        super().__init__()
        self._client, self._bucket, self._key = client, bucket, key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, str | int]] = []

    def writable(self) -> bool:
        """Always writable (the io protocol asks)."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer `data`, sending a part whenever a full part has accumulated."""
        if self.closed:
            raise ValueError(f"write to closed upload s3://{self._bucket}/{self._key}")
        self._buffer += data
        while len(self._buffer) >= _PART_SIZE:
            self._send_part(bytes(self._buffer[:_PART_SIZE]))
            del self._buffer[:_PART_SIZE]
        return memoryview(data).nbytes

    def _send_part(self, body: bytes) -> None:
        """Upload one part, starting the multipart upload on the first."""
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})

    def commit(self) -> None:
        """Publish the object: S3 makes a single PUT or a completed multipart upload visible atomically."""
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
        else:
            if self._buffer:
                self._send_part(bytes(self._buffer))
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
        self._buffer.clear()

    def abort(self) -> None:
        """Discard the sent parts so no object appears; best effort, as the caller is already failing."""
        self._buffer.clear()
        if self._upload_id is not None:
            # An upload whose abort fails stays invisible; a bucket lifecycle rule reclaims its parts.
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)


def list_files(uri_prefix: str, suffixes: str | Iterable[str] | None = None) -> list[str]:
    """Files below directory/prefix `uri_prefix` (recursive, sorted, as URIs in its scheme), e.g. a dataset's clips.

    `suffixes` keeps only names ending in one of them; a missing directory or prefix lists as empty.
    """
    return [uri for uri, _ in list_sizes(uri_prefix, suffixes)]


def list_sizes(uri_prefix: str, suffixes: str | Iterable[str] | None = None) -> list[tuple[str, int]]:
    """Like `list_files`, with each file's size in bytes (from the listing itself: no request per file)."""
    return [(uri, info.size) for uri, info in _listing(uri_prefix, suffixes)]


def _listing(uri_prefix: str, suffixes: str | Iterable[str] | None = None) -> list[tuple[str, pafs.FileInfo]]:
    fs, base = filesystem(uri_prefix)
    wanted = (suffixes,) if isinstance(suffixes, str) else tuple(suffixes or ())
    infos = fs.get_file_info(pafs.FileSelector(base.rstrip("/") or base[:1], recursive=True, allow_not_found=True))
    return sorted(
        ((join(uri_prefix, posixpath.relpath(info.path, base)), info)
         for info in infos
         if info.type == pafs.FileType.File
         and not info.base_name.startswith(TEMP_PREFIX)
         and (not wanted or info.base_name.endswith(wanted))),
        key=lambda item: item[0],
    )


class Version(NamedTuple):
    """A file below a prefix as a change detector sees it: its key relative to the prefix, its size, and a tag that
    changes when its content may have (the object's ETag on S3, else the modification time in ns)."""

    key: str
    size: int
    tag: str


def list_versions(uri_prefix: str) -> list[Version]:
    """Every file below `uri_prefix` with its version tag, sorted by key (an empty list when there is none)."""
    if _is_s3(uri_prefix):
        bucket, _, prefix = _path(uri_prefix).partition("/")
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        pages = _s3_client(_s3_settings()).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        found = [Version(item["Key"][len(prefix):], int(item["Size"]), item["ETag"].strip('"'))
                 for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/")]
        return sorted(found)
    root = uri_prefix.rstrip("/")
    return [Version(uri[len(root) + 1:], info.size, str(info.mtime_ns)) for uri, info in _listing(uri_prefix)]


def delete(uri: str, missing_ok: bool = False) -> None:
    """Remove the file, or the whole directory or S3 prefix, at `uri` (never an S3 bucket itself)."""
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        if missing_ok:
            return
        raise _not_found(uri)
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    else:
        fs.delete_file(path)


def copy_to_local(uri: str, local_dir: str | os.PathLike[str]) -> Path:
    """Copy the file or directory at `uri` into `local_dir` under its own name, for tools that need a local path.

    The copy is made under a hidden name and renamed into place, replacing an earlier copy.
    """
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.NotFound:
        raise _not_found(uri)
    directory = Path(local_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / posixpath.basename(path.rstrip("/"))
    temp = directory / f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{target.name}"
    try:
        if kind == pafs.FileType.Directory:
            temp.mkdir()  # copy_files fills a destination directory but does not create it
        pafs.copy_files(path, str(temp), source_filesystem=fs, destination_filesystem=_LOCAL)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(temp, target)
    except BaseException:
        _remove_local(temp)
        raise
    return target


def _remove_local(path: Path) -> None:
    """Remove a local file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def upload_file(local_path: str | os.PathLike[str], uri: str) -> None:
    """Atomically copy the local file `local_path` to `uri`, streaming it (checkpoints, rendered videos)."""
    with open(local_path, "rb") as source, open_output(uri) as target:
        shutil.copyfileobj(source, target, _PART_SIZE)
