"""Getting a model file safely: checked against its pinned sha256, never half-installed.

A download goes to `<file>.partial`, a stable name (unlike the other files the project writes,
perception/logs/files.py), so that after a dropped connection the next attempt, or the next
run, asks for the rest with an HTTP Range request. Only a complete file with the right checksum
is renamed onto the final name (`install`); a copy from a mirror folder goes through the same
step. A partial or wrong file is never taken for the model. A cache folder that cannot be
written (read-only, full) is a `ModelError` before any byte is fetched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from perception.errors import PerceptionError

DOWNLOAD_ATTEMPTS = 4


class ModelError(PerceptionError):
    """An unknown model name, or a model file that is missing, corrupt or fails its checksum."""


class IncompleteDownload(Exception):
    """The server closed the connection before sending all the bytes it announced."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str = "", progress: bool = True,
             attempts: int = DOWNLOAD_ATTEMPTS) -> Path:
    """Fetch `url` to `dest`: resume or retry on a dropped connection, check sha256, rename."""
    cache_folder(dest)
    partial = dest.with_name(dest.name + ".partial")
    for attempt in range(1, attempts + 1):
        try:
            _fetch(url, partial, progress, desc=dest.name)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500:
                partial.unlink(missing_ok=True)
                raise ModelError(f"{url}: HTTP {error.code} {error.reason}") from error
            failure: Exception = error
        except (OSError, IncompleteDownload) as error:  # URLError, reset, timeout, short body
            failure = error
        if attempt == attempts:
            raise ModelError(f"{url}: download failed after {attempts} attempts ({failure}); "
                             f"run the command again to resume") from failure
        time.sleep(min(0.2 * 2 ** attempt, 3.0))
    return install(partial, dest, sha256, f"{url}: downloaded file")


def _fetch(url: str, partial: Path, progress: bool, desc: str) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "perception-zoo"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=30)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with partial.open("ab" if have else "wb") as file, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=desc,
                     disable=not progress, leave=False) as bar:
            while chunk := response.read(1 << 16):
                file.write(chunk)
                bar.update(len(chunk))
    if total is not None and partial.stat().st_size < total:
        raise IncompleteDownload(f"got {partial.stat().st_size} of {total} bytes")


def copy_verified(source: Path, dest: Path, sha256: str) -> Path:
    """Copy a mirror file into the cache: `<file>.partial`, checksum, then rename."""
    cache_folder(dest)
    partial = dest.with_name(dest.name + ".partial")
    try:
        shutil.copyfile(source, partial)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{source}: cannot be copied into the cache ({error.strerror})") \
            from None
    return install(partial, dest, sha256, f"{source}: mirror file")


def cache_folder(dest: Path) -> Path:
    """Create the folder of `dest` and check that it takes a new file (only writing tells a
    read-only mount or /proc, whatever the permissions say to root)."""
    probe = dest.with_name(f".{dest.name}.write-check-{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ModelError(f"{dest.parent}: the model cache cannot be written here "
                         f"({error.strerror}); set PERCEPTION_CACHE_DIR to a writable "
                         "folder") from None
    return dest.parent


def install(partial: Path, dest: Path, sha256: str, what: str) -> Path:
    """Rename a complete `partial` onto `dest` if its sha256 is the pinned one; else delete
    it and install nothing."""
    if sha256 and sha256_of(partial) != sha256:
        partial.unlink()
        raise ModelError(f"{what} fails its sha256 check (expected {sha256}); nothing was "
                         "installed")
    try:
        os.replace(partial, dest)
    except OSError as error:
        raise ModelError(f"{dest}: cannot be installed ({error.strerror})") from None
    return dest
