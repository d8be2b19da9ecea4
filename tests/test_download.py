"""Mirrored downloads against a local HTTP server on 127.0.0.1: no test touches the network.

The server serves a small fake archive in several ways (whole, with the wrong bytes, stalling, dropping the
connection, trickling, ignoring Range); each test lists mirrors in order and checks what ``fetch`` did: the file it
kept, the requests it made (with their Range headers) and the line it printed.
"""
import hashlib
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torchvision

from dlb_edu import download
from dlb_edu.data import load_dataset
from dlb_edu.download import Archive, cifar_archive, fetch, md5sum
from dlb_edu.errors import DataError

PAYLOAD = hashlib.sha256(b"dlb-edu").digest() * 256  # 8 KiB of deterministic bytes
WRONG = bytes(reversed(PAYLOAD))  # same length, other bytes
NAME = "archive.tar.gz"
FAST = dict(stall_timeout=1.0, min_rate=1e6, grace=0.5, progress=False)  # judged in about a second: loose enough for a loaded machine
TRICKLE = (256, 0.05)  # the slow mirror: 256 bytes every 50 ms, about 5 kB/s (1.6 s for the payload, > grace)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        mirror: "Mirror" = self.server.mirror
        route = self.path.strip("/").split("/")[0]
        mirror.requests.append((route, self.headers.get("Range")))
        body = WRONG if route == "wrong" else PAYLOAD
        if route == "missing":
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if route == "norange":
            start = 0
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        rest = body[start:]
        mirror.served[route] = mirror.served.get(route, 0)
        if route == "stall":  # a little, then nothing until the test is over
            self._send(rest[:100])
            mirror.stop.wait()
        elif route == "drop":  # half, then the connection closes
            self._send(rest[: len(rest) // 2])
            self.close_connection = True
        elif route == "slow":
            size, pause = TRICKLE
            for i in range(0, len(rest), size):
                if mirror.stop.is_set() or not self._send(rest[i: i + size]):
                    return
                time.sleep(pause)
        else:
            self._send(rest)

    def _send(self, data: bytes) -> bool:
        # Counted before the write: once the client holds the bytes, the count already has them (counted after,
        # a client that finished first could be checked before this thread counted: a race on a loaded machine).
        served, route = self.server.mirror.served, self.path.strip("/").split("/")[0]
        served[route] += len(data)
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up on this mirror: these bytes did not reach it
            served[route] -= len(data)
            return False
        return True

    def log_message(self, *args):
        pass


class Mirror:
    """Routes: good, wrong, stall, drop, slow, norange, missing (``url(route)``); ``requests`` records
    (route, Range header) in order, ``served`` the bytes sent per route."""

    def __init__(self):
        self.requests, self.served, self.stop = [], {}, threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None
        self.server.mirror = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{route}/{NAME}"

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror():
    m = Mirror()
    yield m
    m.close()


@pytest.fixture
def down_url():
    """A port with nothing listening (bound, so no one else takes it, but never listening): refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{s.getsockname()[1]}/{NAME}"
    s.close()


def archive(*urls: str, payload: bytes = PAYLOAD) -> Archive:
    return Archive(NAME, hashlib.md5(payload).hexdigest(), tuple(urls))


def test_right_checksum_is_kept_under_its_name_without_a_partial_file(mirror, tmp_path):
    path = fetch(archive(mirror.url("good")), tmp_path / "data", **FAST)
    assert path == tmp_path / "data" / NAME and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "data" / f"{NAME}.part").exists()
    assert mirror.requests == [("good", None)]


def test_a_file_already_there_with_the_right_md5_is_not_downloaded_again(mirror, tmp_path):
    (tmp_path / NAME).write_bytes(PAYLOAD)
    assert fetch(archive(mirror.url("good")), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert mirror.requests == []


def test_a_file_already_there_with_the_wrong_md5_is_replaced(mirror, tmp_path, capsys):
    (tmp_path / NAME).write_bytes(WRONG)
    assert fetch(archive(mirror.url("good")), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert "does not have the MD5" in capsys.readouterr().err


def test_wrong_checksum_is_deleted_and_the_next_mirror_used(mirror, tmp_path, capsys):
    path = fetch(archive(mirror.url("wrong"), mirror.url("good")), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert mirror.requests == [("wrong", None), ("good", None)]  # the bad bytes were not resumed from
    assert "not the original archive" in capsys.readouterr().err


def test_when_every_mirror_fails_one_line_says_what_to_download_by_hand(mirror, tmp_path, down_url):
    spec = archive(mirror.url("wrong"), down_url, mirror.url("missing"))
    with pytest.raises(DataError) as e:
        fetch(spec, tmp_path / "d", **FAST)
    message = str(e.value)
    assert "\n" not in message
    assert f"download it from {spec.urls[0]} by hand (MD5 {spec.md5}) and put it in {tmp_path / 'd'}" in message
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == []  # no wrong file left behind


def test_a_down_mirror_is_skipped_at_once(mirror, tmp_path, down_url, capsys):
    start = time.monotonic()
    path = fetch(archive(down_url, mirror.url("good")), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD and time.monotonic() - start < 5
    assert "refused" in capsys.readouterr().err.lower()


def test_a_404_is_reported_and_skipped(mirror, tmp_path, capsys):
    assert fetch(archive(mirror.url("missing"), mirror.url("good")), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert "HTTP 404" in capsys.readouterr().err


def test_a_stalling_mirror_times_out_and_the_next_one_resumes_its_bytes(mirror, tmp_path, capsys):
    start = time.monotonic()
    path = fetch(archive(mirror.url("stall"), mirror.url("good")), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert time.monotonic() - start < 8  # the stall is cut after 1 s without data, not waited out
    assert mirror.requests == [("stall", None), ("good", "bytes=100-")]
    assert mirror.served["good"] == len(PAYLOAD) - 100
    assert "no data for 1 s" in capsys.readouterr().err


def test_a_dropped_connection_keeps_the_partial_file_for_the_next_mirror(mirror, tmp_path):
    path = fetch(archive(mirror.url("drop"), mirror.url("good")), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    half = len(PAYLOAD) // 2
    assert mirror.requests == [("drop", None), ("good", f"bytes={half}-")]


def test_a_partial_file_from_an_earlier_run_is_resumed_with_a_range_request(mirror, tmp_path, capsys):
    (tmp_path / f"{NAME}.part").write_bytes(PAYLOAD[:3000])
    path = fetch(archive(mirror.url("good")), tmp_path, stall_timeout=1.0, progress=True)
    assert path.read_bytes() == PAYLOAD
    assert mirror.requests == [("good", "bytes=3000-")] and mirror.served["good"] == len(PAYLOAD) - 3000
    captured = capsys.readouterr()
    assert f"{NAME} from 127.0.0.1" in captured.err  # the tqdm bar names the file and the mirror
    assert captured.out.startswith(f"{NAME} from 127.0.0.1") and " KiB of " in captured.out  # and a plain line


def test_a_resumed_file_with_a_bad_start_is_fetched_again_whole(mirror, tmp_path, capsys):
    (tmp_path / f"{NAME}.part").write_bytes(WRONG[:3000])
    assert fetch(archive(mirror.url("good")), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert mirror.requests == [("good", "bytes=3000-"), ("good", None)]
    assert "downloading it whole" in capsys.readouterr().err


def test_a_complete_partial_file_needs_no_more_bytes(mirror, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(PAYLOAD)
    assert fetch(archive(mirror.url("good")), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert mirror.requests == [("good", f"bytes={len(PAYLOAD)}-")]  # answered 416: nothing left to send


def test_a_server_that_ignores_range_starts_the_file_over(mirror, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(PAYLOAD[:3000])
    assert fetch(archive(mirror.url("norange")), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert mirror.served["norange"] == len(PAYLOAD)


def test_a_slow_mirror_is_left_for_a_fast_one_which_resumes_its_bytes(mirror, tmp_path, capsys):
    path = fetch(archive(mirror.url("slow"), mirror.url("good")), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    (first, _), (second, resumed_from) = mirror.requests
    assert (first, second) == ("slow", "good")
    assert 0 < int(resumed_from.split("=")[1].rstrip("-")) < len(PAYLOAD)
    assert "too slow" in capsys.readouterr().err


def test_when_only_slow_mirrors_answer_the_download_still_finishes(mirror, tmp_path, down_url, capsys):
    path = fetch(archive(mirror.url("slow"), down_url), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert [route for route, _ in mirror.requests] == ["slow", "slow"]
    assert mirror.requests[1][1] is not None  # the second pass resumed
    assert "at its own pace" in capsys.readouterr().err


@pytest.mark.parametrize("name,cls", [("cifar10", torchvision.datasets.CIFAR10),
                                      ("cifar100", torchvision.datasets.CIFAR100)])
def test_cifar_archives_are_torchvisions_first_then_mirrors_of_the_same_file(name, cls):
    spec = cifar_archive(name)
    assert (spec.filename, spec.md5, spec.urls[0]) == (cls.filename, cls.tgz_md5, cls.url)
    assert len(spec.urls) == len(set(spec.urls)) >= 1
    assert all(url.split("?")[0].endswith("/" + cls.filename) for url in spec.urls)


def test_load_dataset_downloads_through_the_mirrors_and_unpacks(mirror, tmp_path, monkeypatch):
    from test_data import write_fake_cifar  # CIFAR's python format, as torchvision's own tests make it

    n_train, n_test, k = write_fake_cifar(tmp_path / "src", "cifar10")
    with tarfile.open(tmp_path / "fake.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    fake = (tmp_path / "fake.tar.gz").read_bytes()

    class FakeArchiveHandler(_Handler):  # the good route serves the fake CIFAR archive
        def do_GET(self):
            self.server.mirror.requests.append(("good", self.headers.get("Range")))
            self.send_response(200)
            self.send_header("Content-Length", str(len(fake)))
            self.end_headers()
            self.wfile.write(fake)

    mirror.server.RequestHandlerClass = FakeArchiveHandler
    spec = Archive("cifar-10-python.tar.gz", hashlib.md5(fake).hexdigest(), (mirror.url("good"),))
    monkeypatch.setattr(download, "cifar_archive", lambda name: spec)
    # The fake files cannot have the real archive's per-file MD5 sums: skip torchvision's check of them only.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity",
                        lambda self: (Path(self.root) / self.base_folder).is_dir())
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)

    root = tmp_path / "data"
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", root=root)
    assert mirror.requests == []
    data = load_dataset("cifar10", root=root, download=True)
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.x_test.shape == (n_test, 3, 32, 32)
    assert md5sum(root / "cifar-10-python.tar.gz") == spec.md5
    load_dataset("cifar10", root=root, download=True)  # already there: no second download
    assert mirror.requests == [("good", None)]


def test_the_cli_ends_with_the_by_hand_line_and_exit_code_2(tmp_path, monkeypatch, capsys, down_url):
    from dlb_edu.cli import main

    spec = Archive("cifar-10-python.tar.gz", "0" * 32, (down_url,))
    monkeypatch.setattr(download, "cifar_archive", lambda name: spec)
    code = main(["train", "--dataset", "cifar10", "--download", "--data-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[-1] == (f"dlb_edu: error: could not download cifar-10-python.tar.gz from any mirror: download it from "
                       f"{down_url} by hand (MD5 {'0' * 32}) and put it in {tmp_path / 'data'}")
