"""julnet.storage against a local directory, file:// URIs and a real S3 server (moto_server)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from julnet import storage
from tests.conftest import REPO

# More than two S3 parts (8 MiB each), so the multipart path is exercised.
LARGE = 17 * 1024 * 1024 + 123


@pytest.fixture(params=["local", "file", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty storage root: a plain directory path, the same as a file:// URI, or a fresh S3 bucket."""
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket")
    directory = tmp_path / "store"
    directory.mkdir()
    return str(directory) if request.param == "local" else directory.as_uri()


def test_bytes_and_text_round_trip(root: str) -> None:
    data = bytes(range(256)) * 3
    storage.write_bytes(storage.join(root, "a/b/data.bin"), data)
    assert storage.read_bytes(storage.join(root, "a/b/data.bin")) == data

    uri = storage.join(root, "notes.txt")
    storage.write_text(uri, "lip sync — ünïcode\n")
    assert storage.read_text(uri) == "lip sync — ünïcode\n"
    storage.write_text(uri, "replaced")
    assert storage.read_text(uri) == "replaced"


def test_large_stream_round_trip(root: str) -> None:
    data = os.urandom(LARGE)
    uri = storage.join(root, "video.mp4")
    with storage.open_output(uri) as stream:
        for start in range(0, len(data), 3_000_000):
            stream.write(data[start : start + 3_000_000])
    with storage.open_input(uri) as stream:
        stream.seek(LARGE - 1000)
        assert stream.read() == data[-1000:]
    assert storage.read_bytes(uri) == data


def test_list_files_recursive_sorted_with_suffixes(root: str) -> None:
    for name in ["clips/b.mp4", "clips/a.mp4", "clips/sub/c.wav", "clips/sub/d.mp4", "clipsx/e.mp4", "f.mp4"]:
        storage.write_bytes(storage.join(root, name), b"x")
    clips = storage.join(root, "clips")

    expected = [storage.join(clips, name) for name in ["a.mp4", "b.mp4", "sub/c.wav", "sub/d.mp4"]]
    assert storage.list_files(clips) == expected
    assert storage.list_files(clips + "/") == expected
    assert storage.list_files(clips, suffixes=".mp4") == [expected[0], expected[1], expected[3]]
    assert storage.list_files(clips, suffixes=[".wav", ".txt"]) == [expected[2]]
    assert len(storage.list_files(root)) == 6
    assert storage.list_files(storage.join(root, "missing")) == []
    assert all(uri.startswith(root) for uri in storage.list_files(root))


def test_list_files_keeps_relative_paths_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage.write_bytes("data/x/y.bin", b"1")
    assert storage.list_files("data") == ["data/x/y.bin"]
    assert storage.list_files("./data") == ["./data/x/y.bin"]


def test_exists_and_delete(root: str) -> None:
    uri = storage.join(root, "ckpt/step-00000001/state.pt")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"state")
    storage.write_bytes(storage.join(root, "ckpt/step-00000001/config.yaml"), b"cfg")
    assert storage.exists(uri)
    assert storage.exists(storage.join(root, "ckpt/step-00000001"))

    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError, match=re.escape(uri)):
        storage.delete(uri)
    storage.delete(uri, missing_ok=True)

    storage.delete(storage.join(root, "ckpt/step-00000001"))
    assert storage.list_files(root) == []


@pytest.mark.parametrize("size", [10, LARGE], ids=["small", "multipart"])
def test_failed_output_leaves_nothing(root: str, size: int) -> None:
    uri = storage.join(root, "out/video.mp4")
    with pytest.raises(RuntimeError, match="render failed"), storage.open_output(uri) as stream:
        stream.write(b"v" * size)
        raise RuntimeError("render failed")
    assert not storage.exists(uri)
    assert storage.list_files(root) == []


def test_failed_rewrite_keeps_old_content(root: str) -> None:
    uri = storage.join(root, "config.yaml")
    storage.write_text(uri, "old")
    with pytest.raises(KeyboardInterrupt), storage.open_output(uri) as stream:
        stream.write(b"new, but half")
        raise KeyboardInterrupt
    assert storage.read_text(uri) == "old"
    assert storage.list_files(root) == [uri]


def test_output_invisible_until_closed(root: str) -> None:
    uri = storage.join(root, "frames.bin")
    with storage.open_output(uri) as stream:
        stream.write(b"f" * 1000)
        assert not storage.exists(uri)
        assert storage.list_files(root) == []
    assert storage.read_bytes(uri) == b"f" * 1000


def test_local_failed_output_removes_temp_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError), storage.open_output(str(tmp_path / "x.bin")) as stream:
        stream.write(b"partial")
        raise ValueError
    assert os.listdir(tmp_path) == []


def test_s3_failed_output_aborts_multipart_upload(s3_server, s3_bucket: str) -> None:
    with pytest.raises(RuntimeError), storage.open_output(storage.join(s3_bucket, "big.bin")) as stream:
        stream.write(b"b" * LARGE)
        raise RuntimeError
    bucket = s3_bucket.removeprefix("s3://")
    assert s3_server.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3_server.client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_missing_object_names_uri(root: str, tmp_path: Path) -> None:
    uri = storage.join(root, "no/such/file.bin")
    for read in (storage.read_bytes, storage.read_text, lambda u: storage.copy_to_local(u, tmp_path / "dl")):
        with pytest.raises(FileNotFoundError, match=re.escape(uri)) as caught:
            read(uri)
        assert caught.value.filename == uri
    with pytest.raises(FileNotFoundError, match=re.escape(uri)), storage.open_input(uri):
        pass


def test_write_to_missing_bucket_names_uri(s3_server) -> None:
    uri = "s3://julnet-no-such-bucket/x.bin"
    with pytest.raises(FileNotFoundError, match=re.escape(uri)):
        storage.write_bytes(uri, b"x")


@pytest.mark.parametrize("uri", ["ftp://host/file", "az://container/key", "HTTP://x/y"])
def test_unsupported_scheme_is_rejected(uri: str) -> None:
    for call in (storage.read_bytes, storage.exists, storage.list_files, storage.filesystem):
        with pytest.raises(ValueError, match="unsupported URI scheme"):
            call(uri)
    with pytest.raises(ValueError, match=uri.split(":")[0].lower()):
        storage.write_bytes(uri, b"x")


def test_malformed_uris_are_rejected() -> None:
    with pytest.raises(ValueError, match="no bucket"):
        storage.read_bytes("s3://")
    with pytest.raises(ValueError, match="names a bucket"):
        storage.write_bytes("s3://bucket-only", b"x")
    with pytest.raises(ValueError, match="another host"):
        storage.read_bytes("file://server/share/x")


def test_upload_file_and_copy_to_local_round_trip(root: str, tmp_path: Path) -> None:
    video = tmp_path / "render.mp4"
    video.write_bytes(os.urandom(300_000))
    uri = storage.join(root, "videos/render.mp4")
    storage.upload_file(video, uri)
    assert storage.read_bytes(uri) == video.read_bytes()

    local = storage.copy_to_local(uri, tmp_path / "dl")
    assert local == tmp_path / "dl" / "render.mp4"
    assert local.read_bytes() == video.read_bytes()
    storage.write_bytes(uri, b"v2")
    assert storage.copy_to_local(uri, tmp_path / "dl").read_bytes() == b"v2"

    checkpoint = storage.join(root, "ckpt/step-00000002")
    storage.upload_file(video, storage.join(checkpoint, "state.pt"))
    storage.write_text(storage.join(checkpoint, "config.yaml"), "seed: 1\n")
    for _ in range(2):  # the second copy replaces the first
        copied = storage.copy_to_local(checkpoint, tmp_path / "dl")
    assert sorted(p.name for p in copied.iterdir()) == ["config.yaml", "state.pt"]
    assert (copied / "state.pt").read_bytes() == video.read_bytes()
    assert sorted(os.listdir(tmp_path / "dl")) == ["render.mp4", "step-00000002"]


def test_join_and_the_kind_of_a_uri() -> None:
    assert storage.join("s3://bucket", "a", "b/", "/c") == "s3://bucket/a/b/c"
    assert storage.join("s3://bucket/", "a") == "s3://bucket/a"
    assert storage.join("file:///", "tmp", "x") == "file:///tmp/x"
    assert storage.join("/data/", "/clips", "") == "/data/clips"
    assert storage.join("runs") == "runs"
    assert storage.is_local("/s3/b") and storage.is_local("file:///b") and storage.is_local("runs")
    assert not storage.is_local("s3://b/k") and not storage.is_local("S3://b/k") and not storage.is_local("gs://b/k")
    assert storage.canonical("S3://b//k/") == "s3://b/k" and storage.canonical("gs://b/k") == "gs://b/k"
    assert storage.canonical("/data") is None and storage.canonical("http://x/y") is None
    assert storage.unsupported_scheme("http://x/y") == "http" and storage.unsupported_scheme("gs://b/k") is None


def test_gs_uris_take_the_same_calls_through_pyarrows_gcs_filesystem() -> None:
    """gs:// is wired (no request is made here: no GCS service runs on this machine; untested against a real bucket)."""
    fs, path = storage.filesystem("gs://bucket/a/b.bin")
    assert isinstance(fs, pafs.GcsFileSystem) and path == "bucket/a/b.bin"
    assert storage.filesystem("gs://other/x")[0] is fs and storage.local_path("gs://bucket/a") is None
    with pytest.raises(ValueError, match="names no bucket"):
        storage.filesystem("gs://")


@pytest.mark.parametrize("kind", ["path", "file", "s3"])
def test_every_call_takes_paths_file_and_s3_uris_alike(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The same calls, one code path for each scheme: write, read, list (with sizes and version tags), exists,
    discard what an interrupted write left, delete."""
    root = {"path": str(tmp_path), "file": f"file://{tmp_path}", "s3": request.getfixturevalue("s3_bucket") if kind == "s3" else ""}[kind]
    storage.write_text(storage.join(root, "raw", "a.txt"), "one")
    storage.write_bytes(storage.join(root, "raw", "sub", "b.bin"), b"\x00" * 5)
    assert storage.read_text(storage.join(root, "raw", "a.txt")) == "one" and storage.exists(storage.join(root, "raw", "sub"))
    versions = storage.list_versions(storage.join(root, "raw"))
    assert [(v.key, v.size) for v in versions] == [("a.txt", 3), ("sub/b.bin", 5)] and all(v.tag for v in versions)
    storage.write_text(storage.join(root, "raw", "a.txt"), "two")
    assert storage.list_versions(storage.join(root, "raw"))[0].tag != versions[0].tag or kind != "s3", "S3's ETag follows the content"
    with pytest.raises(RuntimeError), storage.open_output(storage.join(root, "raw", "c.txt")) as out:
        out.write(b"half")
        raise RuntimeError("interrupted")
    storage.discard_partial(storage.join(root, "raw", "c.txt"))
    assert storage.list_files(storage.join(root, "raw")) == [storage.join(root, "raw", "a.txt"), storage.join(root, "raw", "sub/b.bin")]
    storage.delete(storage.join(root, "raw"))
    assert not storage.exists(storage.join(root, "raw", "a.txt")) and storage.list_versions(storage.join(root, "raw")) == []


def test_no_module_but_storage_imports_boto3_or_tests_a_storage_scheme() -> None:
    """One storage seam (issue 29): boto3 and the object-store schemes are julnet.storage's alone."""
    found = []
    for path in sorted((REPO / "julnet").rglob("*.py")):
        if path.name == "storage.py" and path.parent.name == "julnet":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in ("boto3", "botocore")]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("startswith", "removeprefix", "endswith"):
                consts = [c.value for a in node.args for c in ast.walk(a) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                found += [f"{path.name}:{node.lineno} tests for {c!r}" for c in consts if c.rstrip(":/") in ("s3", "gs", "file")]
            elif isinstance(node, ast.Compare):
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                found += [f"{path.name}:{node.lineno} compares with {c!r}" for c in consts if c.rstrip(":/") in ("s3", "gs", "file")]
    assert not found, found


def test_filesystem_paths_and_cache(s3_server) -> None:
    fs, path = storage.filesystem("s3://bucket/a/b.bin")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/a/b.bin"
    assert storage.filesystem("s3://other/x")[0] is fs
    assert storage.filesystem("file:///tmp/a%20b") == (storage.filesystem("/tmp")[0], "/tmp/a b")
    assert isinstance(storage.filesystem("relative/x")[0], pafs.LocalFileSystem)


def test_endpoint_from_env_and_override(s3_server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = storage.join(s3_bucket, "k.txt")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the S3-specific variable wins
    storage.write_text(uri, "via env")
    assert storage.read_text(uri) == "via env"

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    fs, path = storage.filesystem(uri, endpoint_url=s3_server.endpoint)
    assert fs.open_input_file(path).read() == b"via env"


def test_discard_partial_removes_what_an_interrupted_write_left(tmp_path):
    target = tmp_path / "shard.parquet"
    leftover = tmp_path / f"{storage.TEMP_PREFIX}abc123-shard.parquet"
    leftover.write_bytes(b"half")
    other = tmp_path / f"{storage.TEMP_PREFIX}abc123-other.parquet"
    other.write_bytes(b"someone else's")
    storage.discard_partial(str(target))
    assert not leftover.exists() and other.exists()
