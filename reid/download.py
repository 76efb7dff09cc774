"""Fetch the SynergyReID data: streamed resumable download, md5 check, safe zip extraction.

The official data ships inside the DeepSportradar challenge toolkit repository as
``baseline/data/synergyreid/raw/synergyreid_data.zip``. ``prepare_synergyreid`` downloads either the
toolkit's GitHub archive (and takes that inner zip out of it) or a ``synergyreid_data.zip`` directly,
checks the inner zip's md5, and extracts it to ``data_dir/data_reid/{reid_training,
reid_test/{query,gallery}, reid_challenge/{query,gallery}}`` whatever the zip's top folder is.
Nothing is trusted: an entry with an absolute path, a ``..`` component, or a link that leaves the
target stops the extraction before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import requests
from tqdm import tqdm

from reid.errors import InputError, RunFailure
from reid.files import atomic_path, write_text_atomically
from reid.layout import DATA_FOLDER, IMAGE_FOLDERS, TRAIN_FOLDER

TOOLKIT_REPOSITORY = "https://github.com/DeepSportradar/player-reidentification-challenge"
# 2023 is the master branch (commit 625e15c, "Challenge23"); the 2022 set is the v1.0 tag.
TOOLKIT_URLS = {
    2023: f"{TOOLKIT_REPOSITORY}/archive/refs/heads/master.zip",
    2022: f"{TOOLKIT_REPOSITORY}/archive/refs/tags/v1.0.zip",
}
# md5 of the inner synergyreid_data.zip (the toolkit archive itself is rebuilt by GitHub on each request).
SYNERGYREID_MD5 = {
    2023: "2a1cdbd10d2b8f0da6575e3581343e31",
    2022: "05715857791e2e88b2f11e4037fbec7d",
}
INNER_ZIP_PATH = "baseline/data/synergyreid/raw/synergyreid_data.zip"
DATA_ZIP_NAME = "synergyreid_data.zip"
MARKER_NAME = ".source.json"
DROPPED_TOP_FOLDERS = ("__MACOSX",)


class DownloadError(RunFailure):
    """A download, check or extraction failed; the message says what to do (exit status 1)."""


class ArchiveError(DownloadError, InputError):
    """The archive is not what was expected: not a zip, neither kind, missing folders (bad input: exit status 2)."""


class FolderInUseError(DownloadError, InputError):
    """The target folder holds data this stage must not replace without --force."""


class URLError(DownloadError, InputError):
    """The server says the file does not exist (or may not be fetched): another --url is needed."""


class ChecksumError(ArchiveError):
    """The md5 of a file differs from the expected one."""


class UnsafeArchiveError(ArchiveError):
    """A zip entry would be written outside the target folder."""


# ----------------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------------


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 2.0,
    chunk_size: int = 1 << 18,
    progress: bool = True,
) -> Path:
    """Stream ``url`` to ``dest``; resume a partial ``dest + '.part'`` with an HTTP Range request.

    The bytes go to ``<dest>.part`` and are renamed to ``dest`` only once complete, so an interrupted
    run (network drop, Ctrl-C) leaves a partial file that the next call continues. A server that
    ignores Range (answers 200) makes the transfer start over. Connection errors, timeouts, truncated
    bodies and 5xx answers are retried ``retries`` times, waiting ``backoff * attempt`` seconds;
    timeout: seconds to connect and between received bytes.
    Raises DownloadError with the URL, the last error and what to do when every attempt fails.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(1, retries + 2):
        try:
            _download_once(url, part, timeout=timeout, chunk_size=chunk_size, progress=progress)
            os.replace(part, dest)
            return dest
        except _PermanentHTTPError as error:
            raise URLError(f"{url}: {error}; check --url, or download the file by hand and pass it with --archive PATH") from None
        except (requests.RequestException, _IncompleteError) as error:
            last_error = error
            if attempt <= retries:
                kept = part.stat().st_size if part.exists() else 0
                print(f"download failed ({_short(error)}); retry {attempt}/{retries} in {backoff * attempt:g} s from byte {kept:,}")
                time.sleep(backoff * attempt)
    host = urlparse(url).netloc or url
    kept = part.stat().st_size if part.exists() else 0
    resume = f" (the {kept:,} bytes already in {part} are kept and resumed)" if kept else ""
    if isinstance(last_error, requests.HTTPError):  # the server answered, with an error
        cause = f"{host} answers but fails ({_short(last_error)}): the server is down or overloaded."
    elif isinstance(last_error, _IncompleteError):
        cause = f"the connection to {host} kept breaking off."
    else:
        cause = f"Is this machine offline, or is {host} unreachable?"
    raise DownloadError(
        f"could not download {url} ({retries + 1} attempt{'s' if retries else ''}): {_short(last_error)}.\n"
        f"{cause[0].upper()}{cause[1:]} Run the same command again later{resume}, "
        f"or download the file by hand and pass it with --archive PATH."
    )


class _PermanentHTTPError(Exception):
    """An HTTP answer that retrying will not change (4xx other than 408/429)."""


class _IncompleteError(Exception):
    """The server closed the connection before sending every announced byte."""


def _download_once(url: str, part: Path, *, timeout: float, chunk_size: int, progress: bool) -> None:
    start = part.stat().st_size if part.exists() else 0
    # identity: byte offsets must refer to the file itself, not to a compressed stream of it.
    headers = {"Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as response:
        if response.status_code == 416 and start:
            # The range starts at or past the end: the partial file is already whole (or bogus).
            total = _total_from_content_range(response.headers.get("Content-Range"))
            if total == start:
                return
            part.unlink()
            raise _IncompleteError(f"server refused resuming at byte {start:,}; starting over")
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise requests.HTTPError(f"HTTP {response.status_code} {response.reason}")
        if response.status_code >= 400:
            raise _PermanentHTTPError(f"HTTP {response.status_code} {response.reason}")
        if start and response.status_code == 206:
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:
            # 200: the server sends the whole file (no Range support, or nothing to resume).
            start, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
        received = start
        bar = tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        )
        with open(part, mode) as file, bar:
            for chunk in response.iter_content(chunk_size=chunk_size):
                file.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise _IncompleteError(f"connection closed at byte {received:,} of {total:,}")


def _total_from_content_range(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None


def _short(error: Exception | None) -> str:
    """One readable line for a requests error (urllib3 wraps the cause in two layers of text)."""
    if isinstance(error, requests.Timeout):
        return "no answer from the server in time (timeout)"
    if isinstance(error, requests.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        name = type(reason).__name__ if reason is not None else ""
        if name == "NameResolutionError":
            return "the host name could not be resolved (no DNS: offline?)"
        if name == "NewConnectionError" or isinstance(reason, OSError):
            cause = str(reason).split(": ", 1)[-1]
            return f"could not connect ({cause})"
    text = str(error) if error is not None else "unknown error"
    return text if len(text) < 200 else text[:200] + "..."


# ----------------------------------------------------------------------------------------------------
# md5
# ----------------------------------------------------------------------------------------------------


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks (constant memory)."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike, expected: str, users_file: bool = False) -> str:
    """Check the md5 of ``path``; on a mismatch rename the file aside and raise ChecksumError.

    The file is kept (as ``<name>.md5-<actual>``) so that a user can inspect it, and it no longer
    sits where the next run would take it for the verified one. users_file: the user's own file
    (``--archive``), which stays where it is. Returns the md5 when it matches.
    """
    path = Path(path)
    actual = md5sum(path)
    if actual != expected.lower():
        where = f"{path} was left as it is" if users_file else f"The file was kept aside as {move_aside(path, actual)}"
        raise ChecksumError(
            f"md5 mismatch for {path.name}: expected {expected.lower()}, got {actual}.\n"
            f"{where}; nothing was extracted. A different data year? "
            f"Pass the matching --year or --md5, or delete the file and download again."
        )
    return actual


def move_aside(path: Path, md5: str | None = None) -> Path:
    """Rename ``path`` to ``<name>.md5-<its md5>`` (never over another file: that name means the same bytes)."""
    aside = path.with_name(f"{path.name}.md5-{md5 or md5sum(path)}")
    if aside.exists():
        path.unlink()  # the same name, the same content: a copy is already kept aside
    else:
        os.replace(path, aside)
    return aside


# ----------------------------------------------------------------------------------------------------
# Zip inspection and safe extraction
# ----------------------------------------------------------------------------------------------------


def archive_kind(zip_path: str | os.PathLike) -> tuple[Literal["toolkit", "data"], str]:
    """Tell a toolkit repository archive from a synergyreid_data.zip.

    Returns ("toolkit", name of the inner synergyreid_data.zip entry) or ("data", the folder inside
    the zip that holds reid_training/, '' when it sits at the top). Raises DownloadError otherwise.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ArchiveError(f"{zip_path} is not a zip file (a truncated download or an HTML error page?)") from None
    inner = [n for n in names if n == INNER_ZIP_PATH or n.endswith("/" + INNER_ZIP_PATH)]
    if inner:
        return "toolkit", min(inner, key=len)
    try:
        return "data", _data_root(names)
    except DownloadError:
        raise ArchiveError(
            f"{zip_path} is neither the challenge toolkit archive (no entry ending in {INNER_ZIP_PATH}) "
            f"nor a {DATA_ZIP_NAME} (no reid_training/ folder)"
        ) from None


def _data_root(names: list[str]) -> str:
    """The folder (with trailing '/', or '') that holds reid_training/ among zip entry names."""
    roots = set()
    for name in names:
        parts = name.replace("\\", "/").split("/")
        if parts[0] in DROPPED_TOP_FOLDERS:
            continue
        if TRAIN_FOLDER in parts[:-1]:
            index = parts.index(TRAIN_FOLDER)
            roots.add("/".join(parts[:index]) + "/" if index else "")
    if not roots:
        raise ArchiveError("no reid_training/ folder in the archive")
    if len(roots) > 1:
        raise ArchiveError(f"several reid_training/ folders in the archive: under {sorted(roots)}")
    return roots.pop()


def extract_member(zip_path: str | os.PathLike, member: str, dest: str | os.PathLike) -> Path:
    """Copy one zip entry to the file ``dest`` (streamed, via a temporary file)."""
    dest = Path(dest)
    with atomic_path(dest) as temporary, zipfile.ZipFile(zip_path) as archive, archive.open(member) as source:
        with open(temporary, "wb") as target:
            shutil.copyfileobj(source, target, length=1 << 20)
    return dest


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    relative: str  # path below the data root, '/'-separated
    link_target: str | None


def safe_extract(zip_path: str | os.PathLike, target: str | os.PathLike, root: str = "", progress: bool = True) -> int:
    """Extract the entries under ``root`` of a zip into ``target``, refusing any that would escape it.

    Every entry is checked before anything is written: an absolute path (``/x``, ``C:\\x``), a ``..``
    component, a symbolic link whose destination leaves ``target``, or an entry stored below such a
    link raises UnsafeArchiveError naming the entries. ``__MACOSX/`` is dropped, entries outside
    ``root`` are skipped, links that stay inside are recreated as links. Returns the files written.
    """
    target = Path(target)
    entries = []
    unsafe = []
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            name = info.filename.replace("\\", "/")
            reason = _unsafe_name_reason(name)
            if reason:
                unsafe.append(f"{info.filename!r} ({reason})")
                continue
            if name.split("/")[0] in DROPPED_TOP_FOLDERS or not name.startswith(root):
                continue
            relative = name[len(root):].rstrip("/")
            if not relative:
                continue
            link = archive.read(info).decode("utf-8", "replace") if _is_symlink(info) else None
            if link is not None:
                inside = posixpath.normpath(posixpath.join(posixpath.dirname(relative), link))
                if link.startswith("/") or re.match(r"^[A-Za-z]:", link) or inside == ".." or inside.startswith("../"):
                    unsafe.append(f"{info.filename!r} (a link to {link!r}, outside the target)")
                    continue
            entries.append(_Entry(info, relative, link))
        links = {e.relative for e in entries if e.link_target is not None}
        for entry in entries:
            parents = entry.relative.split("/")[:-1]
            through = next(("/".join(parents[: i + 1]) for i in range(len(parents)) if "/".join(parents[: i + 1]) in links), None)
            if through:
                unsafe.append(f"{entry.info.filename!r} (stored below the link {through!r})")
        if unsafe:
            raise UnsafeArchiveError(f"{zip_path}: refusing unsafe entries, nothing extracted: " + "; ".join(unsafe))

        target.mkdir(parents=True, exist_ok=True)
        resolved_target = target.resolve()
        written = 0
        for entry in tqdm(entries, desc="extracting", unit="file", disable=not progress, leave=False):
            path = target / entry.relative
            if entry.info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            if entry.link_target is not None:
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            # Belt and braces: whatever the checks above missed, never write outside the target.
            if not path.parent.resolve().is_relative_to(resolved_target):
                raise UnsafeArchiveError(f"{zip_path}: entry {entry.info.filename!r} resolves outside {target}")
            with archive.open(entry.info) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out, length=1 << 20)
            written += 1
        for entry in entries:
            if entry.link_target is not None:
                path = target / entry.relative
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(entry.link_target, path)
                written += 1
    return written


def _unsafe_name_reason(name: str) -> str | None:
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in the path"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix mode bits live in the high 16 bits of external_attr when the zip was made on Unix.
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


# ----------------------------------------------------------------------------------------------------
# The whole toolkit stage
# ----------------------------------------------------------------------------------------------------


def read_marker(data_dir: str | os.PathLike) -> dict | None:
    """The JSON that says what ``data_dir/data_reid`` holds (written last by a finished run), or None."""
    path = Path(data_dir) / DATA_FOLDER / MARKER_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_marker(data_reid: str | os.PathLike, values: dict) -> None:
    """Write the marker JSON into a data_reid folder (temp file, then rename)."""
    write_text_atomically(Path(data_reid) / MARKER_NAME, json.dumps(values, indent=2) + "\n")


def missing_folders(data_reid: str | os.PathLike) -> list[str]:
    """Which of the five image folders are absent below ``data_reid``."""
    return [folder for folder in IMAGE_FOLDERS if not (Path(data_reid) / folder).is_dir()]


def check_replaceable(data_dir: str | os.PathLike, source: str, force: bool) -> None:
    """Stop early (before any download or drawing) if ``data_dir/data_reid`` holds other data.

    Data written by this same ``source`` (another year, scale or seed) is replaced freely; anything
    else (the other source, or a folder without a marker: someone's own files) only with ``force``.
    """
    final = Path(data_dir) / DATA_FOLDER
    marker = read_marker(data_dir)
    if final.exists() and not force and (marker or {}).get("source") != source:
        raise FolderInUseError(
            f"{final} already exists and holds {describe_marker(marker)}; "
            f"pass --force to replace it, or choose another --data-dir"
        )


def replace_data_folder(data_dir: Path, staged: Path) -> Path:
    """Move a finished ``staged`` folder to ``data_dir/data_reid``, replacing an existing one."""
    final = data_dir / DATA_FOLDER
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    return final


def describe_marker(marker: dict | None) -> str:
    """A few words on what a marker says a data_reid folder holds."""
    if marker is None:
        return "data of unknown origin (no marker file)"
    if marker.get("source") == "synthetic":
        return f"the synthetic twin (scale {marker.get('scale')}, seed {marker.get('seed')})"
    return f"extracted toolkit data (md5 {marker.get('md5')})"


def prepare_synergyreid(
    data_dir: str | os.PathLike,
    url: str,
    md5: str,
    *,
    archive: str | os.PathLike | None = None,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 2.0,
    progress: bool = True,
) -> Path:
    """Download (or take ``archive``), verify and extract SynergyReID to ``data_dir/data_reid``.

    Steps: (1) nothing to do if the marker says this md5 was already extracted (unless ``force``);
    (2) a verified ``data_dir/synergyreid_data.zip`` is reused, otherwise ``url`` is downloaded
    (resumable) or ``archive`` is used, and its kind is told by its content (``archive_kind``): a
    toolkit archive gives up its inner zip (a downloaded one is deleted afterwards unless
    ``keep_archive``); (3) md5 check (a mismatch keeps the file aside and stops); (4) safe extraction
    into a staging folder, renamed to ``data_reid`` once complete; (5) marker. The user's own
    ``archive`` is never moved, overwritten or deleted, whatever its name; an unverified file found at
    ``data_dir/synergyreid_data.zip`` is kept aside as ``synergyreid_data.zip.md5-<its md5>``.
    Returns the data_reid folder.
    """
    data_dir = Path(data_dir)
    md5 = md5.lower()
    marker = read_marker(data_dir)
    final = data_dir / DATA_FOLDER
    if not force and marker and marker.get("md5") == md5 and not missing_folders(final):
        print(f"{final} already holds the verified data (md5 {md5}): nothing to do (--force redoes it)")
        return final

    check_replaceable(data_dir, "toolkit", force)
    given = Path(archive) if archive is not None else None
    if given is not None and not given.is_file():
        raise ArchiveError(f"--archive {given}: no such file")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_zip = data_dir / DATA_ZIP_NAME
    temporary = False
    if data_zip.is_file() and md5sum(data_zip) == md5:
        print(f"using the verified {data_zip}")
    else:
        data_zip, temporary = _verified_data_zip(data_dir, url, md5, given, keep_archive, timeout=timeout,
                                                 retries=retries, backoff=backoff, progress=progress)
        print(f"md5 verified: {md5}")

    try:
        _, root = archive_kind(data_zip)
        staged = data_dir / (DATA_FOLDER + ".partial")
        if staged.exists():
            shutil.rmtree(staged)
        written = safe_extract(data_zip, staged, root=root, progress=progress)
        absent = missing_folders(staged)
        if absent:
            shutil.rmtree(staged)
            raise ArchiveError(f"{data_zip} has no {', '.join(absent)} below {root or 'its top level'}")
    finally:
        if temporary:
            data_zip.unlink()
    write_marker(staged, {"source": "toolkit", "md5": md5, "url": url, "archive": str(archive) if archive else None})
    final = replace_data_folder(data_dir, staged)
    print(f"extracted {written:,} files to {final}")
    return final


def _verified_data_zip(data_dir: Path, url: str, md5: str, given: Path | None, keep_archive: bool,
                       **download_options) -> tuple[Path, bool]:
    """The md5-verified synergyreid_data.zip, from ``given`` or a download: (its path, whether it is a
    temporary file to delete after the extraction)."""
    data_zip = data_dir / DATA_ZIP_NAME
    if given is None:
        name = Path(urlparse(url).path).name or "download.zip"
        # never data_zip itself: a toolkit archive served under that name would be overwritten by its own inner zip
        source = data_dir / (f"download_{name}" if name == DATA_ZIP_NAME else name)
        print(f"downloading {url}")
        download(url, source, **download_options)
    else:
        source = given
    kind, member = archive_kind(source)
    if kind == "data":
        verify_md5(source, md5, users_file=given is not None)
        if not _same_file(source, data_zip):
            _keep_aside(data_zip)
            if given is None:
                os.replace(source, data_zip)
            else:  # the user's copy stays where it is
                with atomic_path(data_zip) as temporary:
                    shutil.copyfile(source, temporary)
        return data_zip, False
    print(f"toolkit archive {source}: taking {member}")
    temporary = given is not None and _same_file(given, data_zip)  # the user's toolkit archive is at data_zip's path
    target = data_dir / "synergyreid_data.from-toolkit.zip" if temporary else data_zip
    if not temporary:
        _keep_aside(data_zip)
    extract_member(source, member, target)
    if given is None and not keep_archive:
        source.unlink()
    verify_md5(target, md5)
    return target, temporary


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)


def _keep_aside(path: Path) -> None:
    """Before writing ``path``: an (unverified) file already there is renamed aside, not overwritten."""
    if path.is_file():
        aside = move_aside(path)
        print(f"note: the unverified {path.name} found in {path.parent} was kept aside as {aside.name}")
