"""reid.download against a local HTTP server (127.0.0.1, started here): download, resume, md5, safe extraction."""

from __future__ import annotations

import hashlib
import io
import socket
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reid.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    archive_kind,
    download,
    prepare_synergyreid,
    read_marker,
    safe_extract,
)

IMAGE_NAMES = [
    "reid_training/0_0_00.jpeg", "reid_training/0_0_01.jpeg", "reid_training/1_0_00.jpeg",
    "reid_test/query/5_1_00.jpeg", "reid_test/gallery/5_1_03.jpeg",
    "reid_challenge/query/7.jpeg", "reid_challenge/gallery/3.jpeg",
]


def data_zip(top: str = "data_reid/", extra: dict[str, bytes] | None = None) -> bytes:
    """A small synergyreid_data.zip: the five folders under ``top``, a __MACOSX folder, some padding."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in IMAGE_NAMES:
            archive.writestr(top + name, f"image {name}".encode() + bytes(2000))
        archive.writestr(f"__MACOSX/{top}reid_training/._0_0_00.jpeg", b"apple metadata")
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return buffer.getvalue()


def toolkit_zip(inner: bytes, top: str = "player-reidentification-challenge-master/") -> bytes:
    """A toolkit repository archive holding ``inner`` at baseline/data/synergyreid/raw/synergyreid_data.zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(top + "README.md", "# The DeepSportradar Player Re-Identification Challenge\n")
        archive.writestr(top + "reid/datasets/synergyreid.py", "md5 = '...'\n")
        archive.writestr(top + "baseline/data/synergyreid/raw/synergyreid_data.zip", inner)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class FileServer:
    """Serves ``files`` (path -> bytes) with Range support; logs (path, Range header, bytes sent).

    truncate: paths whose first answer announces the full length but stops half-way and closes.
    no_range: paths for which Range is ignored (answers 200 with the whole file).
    status: paths answered with this HTTP error status.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.no_range: set[str] = set()
        self.status: dict[str, int] = {}
        self.log: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path)
                range_header = self.headers.get("Range")
                if self.path in server.status:
                    server.log.append((self.path, range_header, 0))
                    self.send_error(server.status[self.path])
                    return
                if data is None:
                    server.log.append((self.path, range_header, 0))
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if range_header and self.path not in server.no_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        server.log.append((self.path, range_header, 0))
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncate:
                    server.truncate.discard(self.path)
                    body = body[: len(body) // 2]
                    self.close_connection = True
                # logged before sending: the client may check the log as soon as it has the bytes
                server.log.append((self.path, range_header, len(body)))
                self.wfile.write(body)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server():
    file_server = FileServer()
    file_server.thread.start()
    yield file_server
    file_server.httpd.shutdown()
    file_server.httpd.server_close()


FAST = dict(timeout=5.0, retries=2, backoff=0.0, progress=False)


def assert_extracted(data_dir: Path) -> None:
    data_reid = data_dir / "data_reid"
    for name in IMAGE_NAMES:
        assert (data_reid / name).read_bytes().startswith(f"image {name}".encode())
    assert not list(data_dir.rglob("__MACOSX")), "__MACOSX must be dropped"
    assert not list(data_dir.rglob("._*"))


# ----------------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------------


def test_download_full_file(server, tmp_path):
    payload = bytes(range(256)) * 400
    server.files["/f.bin"] = payload
    dest = download(server.url("/f.bin"), tmp_path / "f.bin", **FAST)
    assert dest.read_bytes() == payload
    assert not (tmp_path / "f.bin.part").exists()
    assert server.log == [("/f.bin", None, len(payload))]


def test_interrupted_transfer_is_resumed_with_a_range_request(server, tmp_path):
    payload = bytes(range(256)) * 400
    server.files["/f.bin"] = payload
    server.truncate.add("/f.bin")
    # Small chunks: the bytes received before the cut are on disk (the chunk in flight is lost).
    dest = download(server.url("/f.bin"), tmp_path / "f.bin", chunk_size=4096, **FAST)
    assert dest.read_bytes() == payload
    (_, first_range, first_sent), (_, second_range, second_sent) = server.log
    assert first_range is None and first_sent == len(payload) // 2
    resumed_at = int(second_range.removeprefix("bytes=").removesuffix("-"))
    assert first_sent - 4096 < resumed_at <= first_sent
    assert second_sent == len(payload) - resumed_at, "only the missing bytes are sent again"


def test_partial_file_of_an_earlier_run_is_continued(server, tmp_path):
    payload = bytes(range(256)) * 400
    server.files["/f.bin"] = payload
    (tmp_path / "f.bin.part").write_bytes(payload[:1000])
    download(server.url("/f.bin"), tmp_path / "f.bin", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert server.log == [("/f.bin", "bytes=1000-", len(payload) - 1000)]


def test_server_without_range_support_starts_over(server, tmp_path):
    payload = bytes(range(256)) * 400
    server.files["/f.bin"] = payload
    server.no_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes that must not stay")
    download(server.url("/f.bin"), tmp_path / "f.bin", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_complete_partial_file_is_accepted(server, tmp_path):
    payload = b"x" * 5000
    server.files["/f.bin"] = payload
    (tmp_path / "f.bin.part").write_bytes(payload)
    download(server.url("/f.bin"), tmp_path / "f.bin", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_missing_file_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download(server.url("/absent.zip"), tmp_path / "absent.zip", **FAST)
    assert len(server.log) == 1


def test_offline_gives_a_clear_message(tmp_path):
    with socket.socket() as probe:  # a port on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError) as error:
        download(f"http://127.0.0.1:{port}/master.zip", tmp_path / "master.zip", **FAST)
    message = str(error.value)
    assert "(3 attempts)" in message and "could not connect" in message and "offline" in message and "--archive" in message


def test_a_server_error_is_not_called_offline(server, tmp_path):
    server.status["/master.zip"] = 500
    with pytest.raises(DownloadError) as error:
        download(server.url("/master.zip"), tmp_path / "master.zip", **FAST)
    message = str(error.value)
    assert "HTTP 500" in message and "(3 attempts)" in message and "fails" in message and "--archive" in message
    assert "offline" not in message and len(server.log) == 3


# ----------------------------------------------------------------------------------------------------
# The whole stage: toolkit archive or data zip, md5, idempotence
# ----------------------------------------------------------------------------------------------------


def test_toolkit_archive_is_downloaded_verified_and_extracted(server, tmp_path):
    inner = data_zip()
    server.files["/archive/refs/heads/master.zip"] = toolkit_zip(inner)
    data_reid = prepare_synergyreid(tmp_path, server.url("/archive/refs/heads/master.zip"), md5(inner), **FAST)
    assert data_reid == tmp_path / "data_reid"
    assert_extracted(tmp_path)
    assert (tmp_path / "synergyreid_data.zip").read_bytes() == inner
    assert not (tmp_path / "master.zip").exists(), "the toolkit archive is removed once its inner zip is out"
    assert read_marker(tmp_path)["md5"] == md5(inner)


def test_data_zip_url_with_another_top_folder(server, tmp_path):
    inner = data_zip(top="SynergyReID 2023/")
    server.files["/synergyreid_data.zip"] = inner
    prepare_synergyreid(tmp_path, server.url("/synergyreid_data.zip"), md5(inner), **FAST)
    assert_extracted(tmp_path)
    assert not (tmp_path / "SynergyReID 2023").exists()


def test_archive_kind_tells_toolkit_from_data_zip(tmp_path):
    inner = data_zip(top="")
    (tmp_path / "toolkit.zip").write_bytes(toolkit_zip(inner, top="player-reidentification-challenge-1.0/"))
    (tmp_path / "data.zip").write_bytes(inner)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as other:
        other.writestr("repo-main/baseline/data/other/raw/other_data.zip", b"")
        other.writestr("repo-main/README.md", "not the challenge")
    assert archive_kind(tmp_path / "toolkit.zip") == (
        "toolkit", "player-reidentification-challenge-1.0/baseline/data/synergyreid/raw/synergyreid_data.zip")
    assert archive_kind(tmp_path / "data.zip") == ("data", "")
    with pytest.raises(DownloadError, match="neither"):
        archive_kind(tmp_path / "other.zip")
    (tmp_path / "page.zip").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DownloadError, match="not a zip"):
        archive_kind(tmp_path / "page.zip")


def test_local_archive_instead_of_a_download(tmp_path):
    inner = data_zip()
    archive = tmp_path / "downloads" / "master.zip"
    archive.parent.mkdir()
    archive.write_bytes(toolkit_zip(inner))
    prepare_synergyreid(tmp_path / "data", "http://127.0.0.1:9/unused", md5(inner), archive=archive, **FAST)
    assert_extracted(tmp_path / "data")
    assert archive.exists(), "a user's own archive is never deleted"


def test_a_toolkit_archive_served_as_synergyreid_data_zip(server, tmp_path):
    inner = data_zip()
    server.files["/files/synergyreid_data.zip"] = toolkit_zip(inner)  # the kind is told by the content
    prepare_synergyreid(tmp_path, server.url("/files/synergyreid_data.zip"), md5(inner), **FAST)
    assert_extracted(tmp_path)
    assert (tmp_path / "synergyreid_data.zip").read_bytes() == inner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_reid", "synergyreid_data.zip"]


@pytest.mark.parametrize("where", ["in the data folder", "elsewhere"])
def test_the_users_toolkit_archive_named_synergyreid_data_zip_is_never_touched(tmp_path, where):
    inner = data_zip()
    data_dir = tmp_path / "data"
    archive = (data_dir if where == "in the data folder" else tmp_path / "downloads") / "synergyreid_data.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(toolkit_zip(inner))
    before = archive.read_bytes()
    prepare_synergyreid(data_dir, "http://127.0.0.1:9/unused", md5(inner), archive=archive, **FAST)
    assert_extracted(data_dir)
    assert archive.read_bytes() == before, "the user's archive is neither overwritten nor deleted"
    if where == "elsewhere":
        assert (data_dir / "synergyreid_data.zip").read_bytes() == inner
    assert sorted(p.name for p in data_dir.iterdir()) == ["data_reid", "synergyreid_data.zip"]  # no temporary left


def test_the_users_archive_with_a_wrong_md5_stays_where_it_is(tmp_path):
    inner = data_zip()
    archive = tmp_path / "synergyreid_data.zip"
    archive.write_bytes(inner)
    with pytest.raises(ChecksumError, match="left as it is"):
        prepare_synergyreid(tmp_path, "http://127.0.0.1:9/unused", "0" * 32, archive=archive, **FAST)
    assert archive.read_bytes() == inner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synergyreid_data.zip"]


def test_an_unverified_zip_in_the_data_folder_is_kept_aside_not_overwritten(server, tmp_path):
    inner = data_zip()
    server.files["/master.zip"] = toolkit_zip(inner)
    other = data_zip(top="other/")  # e.g. another year's data
    (tmp_path / "synergyreid_data.zip").write_bytes(other)
    prepare_synergyreid(tmp_path, server.url("/master.zip"), md5(inner), **FAST)
    assert (tmp_path / "synergyreid_data.zip").read_bytes() == inner
    assert (tmp_path / f"synergyreid_data.zip.md5-{md5(other)}").read_bytes() == other


def test_wrong_md5_stops_keeps_the_file_aside_and_extracts_nothing(server, tmp_path):
    inner = data_zip()
    server.files["/master.zip"] = toolkit_zip(inner)
    expected = "0" * 32
    with pytest.raises(ChecksumError) as error:
        prepare_synergyreid(tmp_path, server.url("/master.zip"), expected, **FAST)
    assert expected in str(error.value) and md5(inner) in str(error.value)
    assert (tmp_path / f"synergyreid_data.zip.md5-{md5(inner)}").read_bytes() == inner
    assert not (tmp_path / "synergyreid_data.zip").exists()
    assert not (tmp_path / "data_reid").exists()
    assert not (tmp_path / "data_reid.partial").exists()


def test_second_run_does_nothing_and_says_so(server, tmp_path, capsys):
    inner = data_zip()
    server.files["/master.zip"] = toolkit_zip(inner)
    prepare_synergyreid(tmp_path, server.url("/master.zip"), md5(inner), **FAST)
    requests_before = len(server.log)
    image = tmp_path / "data_reid" / IMAGE_NAMES[0]
    mtime = image.stat().st_mtime_ns
    capsys.readouterr()
    prepare_synergyreid(tmp_path, server.url("/master.zip"), md5(inner), **FAST)
    assert "nothing to do" in capsys.readouterr().out
    assert len(server.log) == requests_before
    assert image.stat().st_mtime_ns == mtime


def test_verified_zip_on_disk_is_reused_without_download(server, tmp_path):
    inner = data_zip()
    (tmp_path / "synergyreid_data.zip").write_bytes(inner)
    prepare_synergyreid(tmp_path, server.url("/never-asked.zip"), md5(inner), **FAST)
    assert_extracted(tmp_path)
    assert server.log == []


def test_foreign_data_reid_is_kept_without_force(server, tmp_path):
    inner = data_zip()
    server.files["/master.zip"] = toolkit_zip(inner)
    (tmp_path / "data_reid").mkdir()
    (tmp_path / "data_reid" / "mine.txt").write_text("keep me")
    with pytest.raises(DownloadError, match="--force"):
        prepare_synergyreid(tmp_path, server.url("/master.zip"), md5(inner), **FAST)
    assert (tmp_path / "data_reid" / "mine.txt").read_text() == "keep me"
    prepare_synergyreid(tmp_path, server.url("/master.zip"), md5(inner), force=True, **FAST)
    assert_extracted(tmp_path)


# ----------------------------------------------------------------------------------------------------
# Safe extraction
# ----------------------------------------------------------------------------------------------------


def _zip_with(tmp_path: Path, entries: list[tuple[str, bytes, bool]]) -> Path:
    """A zip of (name, content, is_symlink) entries, written by hand so hostile names stay as they are."""
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content, is_link in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = ((stat.S_IFLNK | 0o777) if is_link else (stat.S_IFREG | 0o644)) << 16
            archive.writestr(info, content)
    return path


@pytest.mark.parametrize("hostile", ["data_reid/../../evil.txt", "/tmp/evil.txt", "data_reid/reid_training/../../../evil.txt"])
def test_zip_slip_entry_is_refused_and_nothing_is_written(tmp_path, hostile):
    archive = _zip_with(tmp_path, [("data_reid/reid_training/0_0_00.jpeg", b"ok", False), (hostile, b"pwned", False)])
    target = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError) as error:
        safe_extract(archive, target, root="data_reid/", progress=False)
    assert repr(hostile) in str(error.value)
    assert not target.exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_symlink_leaving_the_target_is_refused(tmp_path):
    archive = _zip_with(tmp_path, [
        ("data_reid/reid_training/0_0_00.jpeg", b"ok", False),
        ("data_reid/reid_training/escape", b"../../../outside", True),
    ])
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="data_reid/reid_training/escape"):
        safe_extract(archive, target, root="data_reid/", progress=False)
    assert not target.exists()


def test_writing_through_a_symlink_is_refused(tmp_path):
    archive = _zip_with(tmp_path, [
        ("data_reid/reid_training", b".", True),  # stays inside, but files below it would follow it
        ("data_reid/reid_training/0_0_00.jpeg", b"ok", False),
    ])
    with pytest.raises(UnsafeArchiveError, match="below the link"):
        safe_extract(archive, tmp_path / "out", root="data_reid/", progress=False)


def test_symlink_inside_the_target_is_kept_as_a_link(tmp_path):
    archive = _zip_with(tmp_path, [
        ("data_reid/reid_training/0_0_00.jpeg", b"ok", False),
        ("data_reid/reid_training/alias.jpeg", b"0_0_00.jpeg", True),
    ])
    target = tmp_path / "out"
    assert safe_extract(archive, target, root="data_reid/", progress=False) == 2
    link = target / "reid_training" / "alias.jpeg"
    assert link.is_symlink() and link.read_bytes() == b"ok"


def test_hostile_toolkit_data_is_refused_by_the_whole_stage(tmp_path):
    inner = data_zip(extra={"data_reid/../../evil.txt": b"pwned"})
    (tmp_path / "synergyreid_data.zip").write_bytes(inner)
    with pytest.raises(UnsafeArchiveError, match="evil.txt"):
        prepare_synergyreid(tmp_path / ".", "http://127.0.0.1:9/unused", md5(inner), **FAST)
    assert not (tmp_path / "data_reid").exists()
    assert not list(tmp_path.parent.rglob("evil.txt"))
