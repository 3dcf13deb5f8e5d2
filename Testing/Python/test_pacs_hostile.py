"""The PACS side against servers that misbehave (found by a hostile sweep): a DICOMweb server that names its
instances with paths, answers a STOW with failures, keeps failing, or is given with a password in its URL;
AE titles DICOM does not allow; a refused request that would download a study first; a storage SCP that refuses
a file, rejects our AE title, never answers or sits on IPv6."""
from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import shared
from dicom_fixtures import with_uids

pydicom = pytest.importorskip("pydicom", reason="the dicom extra (pip install 'mvcf[dicom]') is not installed")
pytest.importorskip("dicomweb_client", reason="the dicom extra (pip install 'mvcf[dicom]') is not installed")

from mvcf.cli.main import main  # noqa: E402
from mvcf.dicom import pacs  # noqa: E402
from mvcf.errors import MVCFError  # noqa: E402

BODY_IJK = "240,322,10"
BOUNDARY = "mvcf-test-boundary"


class FakeDICOMweb:
    """A loopback HTTP server with one behaviour per test: `answer(handler)` -> (status, content type, body);
    every request's method and path is recorded."""

    def __init__(self, answer) -> None:
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                owner.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                elif self.headers.get("Transfer-Encoding") == "chunked":
                    while (size := int(self.rfile.readline().strip() or b"0", 16)):
                        self.rfile.read(size + 2)
                    self.rfile.readline()
                status, kind, body = answer(self)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    servers: list[FakeDICOMweb] = []

    def start(answer) -> FakeDICOMweb:
        servers.append(FakeDICOMweb(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    return with_uids(shared("totalsegmentator/example_ct_dicom"), tmp_path_factory.mktemp("pacs") / "ct")


def _multipart(datasets) -> bytes:
    parts = []
    for ds in datasets:
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        parts.append(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buffer.getvalue()
                     + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def _study(series: Path, uids) -> bytes:
    import warnings

    datasets = []
    with warnings.catch_warnings():   # pydicom warns of the paths given as UIDs: what this server is for
        warnings.simplefilter("ignore", UserWarning)
        for path, uid in zip(sorted(series.iterdir()), uids):
            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            datasets.append(ds)
        return _multipart(datasets)


@pytest.mark.parametrize("uids", [["../../../EVIL_0", "../../../EVIL_1"], ["{tmp}/ABS_0"], ["1.2.3", "1.2.3"]])
def test_a_server_never_writes_outside_the_ct_folder(series, fake, tmp_path, uids):
    """SOP Instance UIDs that are paths wrote (and overwrote) files three levels above --ct; two instances
    with one UID were merged into one file."""
    body = _study(series, [uid.format(tmp=tmp_path) for uid in uids])
    server = fake(lambda _h: (200, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}', body))
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (tmp_path / "EVIL_0.dcm").write_text("the user's")
    with pytest.raises(MVCFError, match="is not a DICOM UID|two instances with the SOP Instance UID 1.2.3"):
        pacs.retrieve_study(server.url, "1.2.3.4", deep / "ct")
    assert (tmp_path / "EVIL_0.dcm").read_text() == "the user's"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == \
        ["EVIL_0.dcm", "a", "a/b", "a/b/c"]


def test_a_stow_answered_with_failed_instances_is_a_failed_send(series, fake):
    """HTTP 202 with a FailedSOPSequence (the server kept none of them) was reported as `sent 4 files`."""
    paths = sorted(series.iterdir())[:2]
    refused = pydicom.Dataset()
    refused.FailedSOPSequence = []
    for path in paths:
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        item.FailureReason = 0xC000
        refused.FailedSOPSequence.append(item)
    body = json.dumps(refused.to_json_dict()).encode()
    server = fake(lambda _h: (202, "application/dicom+json", body))
    result = pacs.send_stow(paths, server.url)
    assert not result.ok and result.attempts == 2
    assert "the server refused 2 of 2 files" in result.error and "0xC000" in result.error


@pytest.mark.parametrize("kind, body", [("text/html", b"<html>please log in</html>"), ("text/html", b""),
                                         ("application/dicom+json", b"{}")])
def test_a_stow_answered_by_a_web_page_or_nothing_is_a_failed_send(series, fake, kind, body):
    """A login page, a proxy's redirect, an empty body or an empty JSON (HTTP 200) were "sent 4 files", exit 0,
    with nothing stored anywhere; a storage response listing fewer instances than sent is a failure too."""
    paths = sorted(series.iterdir())[:2]
    result = pacs.send_stow(paths, fake(lambda _h: (200, kind, body)).url)
    assert not result.ok and "no DICOM storage response" in result.error
    stored = pydicom.Dataset()
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = pydicom.dcmread(paths[0], stop_before_pixels=True).SOPInstanceUID
    stored.ReferencedSOPSequence = [item]
    partial = json.dumps(stored.to_json_dict()).encode()
    result = pacs.send_stow(paths, fake(lambda _h: (200, "application/dicom+json", partial)).url)
    assert not result.ok and (result.files, result.stored) == (2, 1)
    assert "the retry of the 1 file not stored: the server's answer lists 0 of 1 files as stored" in result.error


def test_each_attempt_is_one_http_request_and_a_password_is_never_shown(series, fake):
    """dicomweb-client retried every error five times with pauses of up to 16 s inside each of our two
    attempts (10 requests, 61 s on a closed port); a password in the URL was printed and put into the JSON."""
    server = fake(lambda _h: (503, "text/plain", b"busy"))
    url = server.url.replace("http://", "http://reader:s3cret@")
    result = pacs.send_stow(sorted(series.iterdir())[:1], url)
    assert [method for method, _ in server.requests] == ["POST", "POST"]
    assert not result.ok and "503" in result.error
    assert "s3cret" not in json.dumps(result.to_dict()) and result.to.startswith("http://reader:***@127.0.0.1:")
    with pytest.raises(MVCFError) as refused:
        pacs.retrieve_study(url, "1.2.3.4", Path(series).parent / "never")
    assert "s3cret" not in str(refused.value) and "reader:***@" in str(refused.value)
    assert "cannot write" not in str(refused.value)   # a network error is not worded as a write error
    assert pacs.shown_url("http://pacs:8042/dicom-web") == "http://pacs:8042/dicom-web"


def _run(capsys, *argv):
    capsys.readouterr()
    code = main(["--progress", "none", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("extra, message", [
    (["--send", "AB\\CD@127.0.0.1:104"], "--send: 'AB\\\\CD' is not an AE title"),
    (["--send", "ÄÖÜ@127.0.0.1:104"], "--send: 'ÄÖÜ' is not an AE title"),
    (["--send", "PACS@127.0.0.1:104", "--calling-aet", ""], "--calling-aet: '' is not an AE title"),
    (["--send", "PACS@127.0.0.1:104", "--calling-aet", "ABCDEFGHIJKLMNOPQ"], "--calling-aet: 'ABCDEFGHIJKLMNOPQ'"),
])
def test_an_ae_title_dicom_does_not_allow_is_refused_before_any_work(series, tmp_path, capsys, extra, message):
    """These were refused only after the prediction, with the DICOM files already written, and retried."""
    code, out, err = _run(capsys, "predict", "--ct", series, "--point-ijk", BODY_IJK, "--dicom-out",
                          tmp_path / "d", *extra)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "d").exists()


def test_a_refused_request_downloads_nothing(fake, tmp_path, capsys):
    """--retrieve-study fetched the study before the other checks: a --dicom-out that is a file left the
    downloaded folder behind, and the rerun was refused because --ct existed."""
    server = fake(lambda _h: (500, "text/plain", b"must not be asked"))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for extra, message in [(["--retrieve-study", "1.2.3", "--dicom-out", a_file], "exists and is not a folder"),
                           (["--retrieve-study", "../../instances"], "is not a DICOM UID")]:
        code, out, err = _run(capsys, "predict", "--ct", tmp_path / "fetched", "--point-ijk", BODY_IJK,
                              "--retrieve-from", server.url, *extra)
        assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
    assert server.requests == [] and not (tmp_path / "fetched").exists()


class StorageSCP:
    """A pynetdicom storage SCP on loopback: `answer(uid, calls)` gives each C-STORE's status (after `delay`
    seconds); every stored UID and the association's end (released / aborted) are recorded."""

    def __init__(self, answer=lambda uid, calls: 0x0000, delay: float = 0.0, host: str = "127.0.0.1",
                 calling: tuple[str, ...] = ()) -> None:
        import time

        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt

        self.calls: list[str] = []
        self.ends: list[str] = []

        def store(event):
            uid = str(event.request.AffectedSOPInstanceUID)
            self.calls.append(uid)
            time.sleep(delay)
            return answer(uid, self.calls)

        ae = AE("SCP")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.require_calling_aet = list(calling)
        self.server = ae.start_server((host, 0), block=False, evt_handlers=[
            (evt.EVT_C_STORE, store), (evt.EVT_RELEASED, lambda _e: self.ends.append("released")),
            (evt.EVT_ABORTED, lambda _e: self.ends.append("aborted"))])
        port = self.server.server_address[1]
        self.destination = f"SCP@[{host}]:{port}" if ":" in host else f"SCP@{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scp():
    servers: list[StorageSCP] = []

    def start(**kwargs) -> StorageSCP:
        servers.append(StorageSCP(**kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def plain(tmp_path) -> list[Path]:
    """Four uncompressed CT objects with their own UIDs (what a storage SCP of any kind accepts)."""
    from pydicom import examples
    from pydicom.uid import generate_uid

    paths = []
    for i in range(4):
        ds = examples.ct
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        paths.append(tmp_path / f"CT_{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_a_refused_c_store_file_does_not_stop_the_rest_and_the_retry_sends_only_what_is_missing(scp, plain):
    """A file the PACS refused ended the send: the files after it were never sent, the result said `files: 4`,
    and the retry sent the stored ones again."""
    refused = _uid(plain[1])
    always = scp(answer=lambda uid, calls: 0xA700 if uid == refused else 0x0000)
    result = pacs.send_c_store(plain, always.destination, "MVCF")
    assert not result.ok and (result.files, result.stored, result.attempts) == (4, 3, 2)
    assert result.error == "the retry of the 1 file not stored: SCP refused 1 of 1 files (first: CT_1.dcm: status " \
                           "0xA700)"
    assert always.calls == [_uid(p) for p in plain] + [refused]
    once = scp(answer=lambda uid, calls: 0xA700 if uid == refused and calls.count(uid) == 1 else 0x0000)
    result = pacs.send_c_store(plain, once.destination, "MVCF")
    assert result.ok and (result.stored, result.attempts) == (4, 2)
    assert sorted(once.calls) == sorted([_uid(p) for p in plain] + [refused])


def test_each_c_store_failure_says_what_failed(scp, plain, monkeypatch):
    """A closed port, a rejected association and a PACS that never answers all read 'rejected or timed out',
    and a PACS that never answered a C-STORE was asked whether it knows our AE title."""
    closed = StorageSCP()
    closed.close()
    result = pacs.send_c_store(plain[:1], closed.destination, "MVCF")
    assert "no DICOM association with 127.0.0.1:" in result.error and "nothing answered" in result.error
    known = scp(calling=("KNOWN",))
    result = pacs.send_c_store(plain[:1], known.destination, "STRANGER")
    assert "rejected the association: is SCP its AE title, and does it know our calling AE title STRANGER?" \
        in result.error
    assert pacs.send_c_store(plain[:1], known.destination, "KNOWN").ok
    monkeypatch.setattr(pacs, "DICOM_TIMEOUT_S", 0.5)
    monkeypatch.setattr(pacs, "RETRY_PAUSE_S", 0.0)
    slow = scp(delay=1.0)
    result = pacs.send_c_store(plain[:1], slow.destination, "MVCF")
    assert not result.ok and result.stored == 0
    assert "SCP gave no answer to the C-STORE of CT_0.dcm within 0.5 s" == result.error


def test_a_ctrl_c_during_a_c_store_aborts_the_association(scp, plain):
    """A Ctrl-C while the PACS took its time released the association, which waited for the PACS's answer
    (up to 30 s) before the interrupt took effect."""
    import os
    import signal
    import time

    slow = scp(delay=2.0)
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        pacs.send_c_store(plain, slow.destination, "MVCF")
    deadline = time.monotonic() + 10
    while not slow.ends and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slow.ends == ["aborted"] and len(slow.calls) == 1


def test_an_ipv6_pacs_is_reached_in_brackets(scp, plain):
    """`--send PACS@[::1]:104` was refused as no AET@HOST:PORT."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    server = scp(host="::1")
    assert server.destination.startswith("SCP@[::1]:")
    result = pacs.send_c_store(plain[:2], server.destination, "MVCF")
    assert result.ok and result.stored == 2 and len(server.calls) == 2
    with pytest.raises(MVCFError, match=r"an IPv6 address in brackets, AET@\[::1\]:104"):
        pacs.parse_ae("SCP@::1:104")
