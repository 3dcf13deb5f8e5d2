"""Send DICOM files to a PACS: C-STORE (pynetdicom) to AET@HOST:PORT, or STOW-RS (dicomweb-client) to a
DICOMweb base URL; and fetch a study by its StudyInstanceUID (WADO-RS) to read it as the CT. Each send is
tried twice (one retry after a short pause, of the files the first attempt did not store; each HTTP request
once, within HTTP_TIMEOUT_S); a failure is reported as a result, never raised, with how many files the PACS
holds, so the files already written stay where they are and the caller decides the exit code."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from mvcf.dicom.source import need
from mvcf.errors import MVCFError

RETRY_PAUSE_S = 1.0
#: C-STORE association, message and network timeouts in seconds.
DICOM_TIMEOUT_S = 30.0
#: DICOMweb (connect, read) timeouts in seconds: a server that accepts and never answers costs two of these.
HTTP_TIMEOUT_S = (10.0, 30.0)
#: AET@HOST:PORT, an IPv6 host in brackets (AET@[::1]:104)
_AE = re.compile(r"^([^@]{1,16})@(\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(\d{1,5})$")
#: An AE title: at most 16 characters of the default repertoire, no backslash, no control character.
_AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")
#: A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters (leading zeros, which some devices write,
#: are let through); what names a retrieved file, so never a path.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass
class SendResult:
    to: str
    ok: bool
    files: int
    attempts: int
    error: str = ""
    stored: int = 0   # of `files`: how many the PACS holds (on a failure, some may be)

    def to_dict(self) -> dict:
        return asdict(self)


def check_ae_title(title: str, option: str) -> str:
    """An AE title as DICOM allows it (PS3.5 6.2: 16 characters, no backslash or control character, not only
    spaces), stripped, or a one-line MVCFError naming `option`."""
    if not _AE_TITLE.match(title) or not title.strip():
        raise MVCFError(f"{option}: {title!r} is not an AE title (1-16 ASCII letters, digits, spaces or "
                        "punctuation, no backslash)")
    return title.strip()


def parse_ae(text: str) -> tuple[str, str, int]:
    """'AET@HOST:PORT' or 'AET@[IPv6]:PORT' -> (AE title, host without brackets, port), or a one-line
    MVCFError."""
    import ipaddress

    match = _AE.match(text.strip())
    host = match.group(2) if match else ""
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            match = None
    if not match or not 0 < int(match.group(3)) < 65536 or not match.group(1).strip():
        raise MVCFError(f"--send wants AET@HOST:PORT (AE title of at most 16 characters; an IPv6 address in "
                        f"brackets, AET@[::1]:104), got {text!r}")
    return check_ae_title(match.group(1), "--send"), host, int(match.group(3))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_uid(text: str, what: str) -> str:
    """A DICOM UID, or a one-line MVCFError: what a study is asked for by, and what a file is named by."""
    if not isinstance(text, str) or len(text) > 64 or not _UID.match(text):
        raise MVCFError(f"{what} {str(text)[:80]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return text


def shown_url(url: str) -> str:
    """`url` as it may be printed: a password in it replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _scrubbed(text: str, url: str) -> str:
    """An error text with the password of `url` taken out (requests repeats the URL in its messages)."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    return text.replace(password, "***") if password else text


def _client(web, url: str):
    """A DICOMweb client that tries each request once (we retry the whole send once) with bounded timeouts;
    dicomweb-client's default retries any error five times with pauses of up to 16 s."""
    client = web.DICOMwebClient(url=url.rstrip("/"), timeout=HTTP_TIMEOUT_S)
    client.set_http_retry_params(retry=False)
    return client


def _c_store(paths: Sequence[Path], called: str, host: str, port: int, calling: str, stored: set[Path]) -> None:
    """C-STORE every file over one association, adding each one the PACS keeps to `stored`; a file it refuses
    does not stop the rest. Raises MVCFError naming the refused files, or why the association failed."""
    pynetdicom = need("pynetdicom", "--send")
    import pydicom
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class
    from pynetdicom.status import code_to_category

    datasets = [pydicom.dcmread(path) for path in paths]
    ae = pynetdicom.AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DICOM_TIMEOUT_S
    wanted = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in sorted(wanted):
        if not issubclass(uid_to_service_class(sop_class), StorageServiceClass):
            raise MVCFError(f"SOP class {sop_class} is not a storage SOP class")
        ae.add_requested_context(sop_class, [syntax, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    shown = _host_port(host, port)
    assoc = ae.associate(host, port, ae_title=called)
    if assoc.is_rejected:
        raise MVCFError(f"{called}@{shown} rejected the association: is {called} its AE title, and does it know "
                        f"our calling AE title {calling}?")
    if not assoc.is_established:
        raise MVCFError(f"no DICOM association with {shown}: nothing answered (connection refused, or no answer "
                        f"within {DICOM_TIMEOUT_S:g} s)")
    refused: list[str] = []
    try:
        for path, ds in zip(paths, datasets):
            started = time.monotonic()
            code = getattr(assoc.send_c_store(ds), "Status", None)
            if code is None and time.monotonic() - started >= 0.9 * DICOM_TIMEOUT_S:
                raise MVCFError(f"{called} gave no answer to the C-STORE of {path.name} within "
                                f"{DICOM_TIMEOUT_S:g} s")
            if code is None:   # Orthanc closes the connection at once for a calling AE title it does not know
                raise MVCFError(f"{called} ended the association at the C-STORE of {path.name} without a status "
                                f"(does it know our calling AE title {calling}? a PACS stores only from the AE "
                                "titles it knows)")
            if code_to_category(code) in ("Success", "Warning"):   # 0x0107, 0x0116, 0xBxxx: stored
                stored.add(path)
            else:
                refused.append(f"{path.name}: status 0x{code:04X}")
    except BaseException:   # a Ctrl-C too: an abort ends at once, a release would wait for the PACS to answer
        assoc.abort()
        raise
    assoc.release()
    if refused:
        raise MVCFError(f"{called} refused {len(refused)} of {len(paths)} files (first: {refused[0]})")


def _stow(paths: Sequence[Path], url: str, stored: set[Path]) -> None:
    """STOW-RS the files in one request, adding each one the answer lists as stored to `stored`."""
    web = need("dicomweb_client", "--dicomweb")
    import pydicom

    datasets = [pydicom.dcmread(path) for path in paths]
    answer = _client(web, url).store_instances(datasets=datasets)
    # any 2xx counted as stored: a login page, a proxy's redirect or an empty answer lost the results silently
    listed = {str(getattr(item, "ReferencedSOPInstanceUID", "")) for item in
              getattr(answer, "ReferencedSOPSequence", None) or []}
    stored.update(path for path, ds in zip(paths, datasets) if str(ds.SOPInstanceUID) in listed)
    failed = list(getattr(answer, "FailedSOPSequence", None) or [])
    if failed:   # HTTP 202: the server kept some instances and refused these
        reason = getattr(failed[0], "FailureReason", None)
        raise MVCFError(f"the server refused {len(failed)} of {len(paths)} files (first: "
                        f"{getattr(failed[0], 'ReferencedSOPInstanceUID', '?')}, failure reason "
                        f"{'0x%04X' % reason if isinstance(reason, int) else reason})")
    if not listed:
        raise MVCFError("the server's answer is no DICOM storage response (no stored instance listed): is the "
                        "URL the STOW-RS endpoint of the PACS, not a web page, a login or a proxy?")
    missing = [str(ds.SOPInstanceUID) for ds in datasets if str(ds.SOPInstanceUID) not in listed]
    if missing:
        raise MVCFError(f"the server's answer lists {len(paths) - len(missing)} of {len(paths)} files as stored "
                        f"(first missing: {missing[0]})")


def _first_line(exc: BaseException) -> str:
    """What one error line shows of an exception of the network libraries."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300] or type(exc).__name__


def _twice(to: str, paths: Sequence[Path], send: Callable[[Sequence[Path], set[Path]], None]) -> SendResult:
    """`send(files, stored)` tried twice, the second time with only the files not stored by the first; `to` is
    what the result shows (a URL's password left out)."""
    error = ""
    stored: set[Path] = set()
    for attempt in (1, 2):
        pending = [p for p in paths if p not in stored]
        try:
            send(pending, stored)
            return SendResult(to=shown_url(to), ok=True, files=len(paths), attempts=attempt, stored=len(paths))
        except Exception as exc:  # network, protocol and HTTP errors of two libraries: reported, not raised
            error = _first_line(exc)
            if len(pending) < len(paths):
                error = f"the retry of the {len(pending)} file{'s' * (len(pending) > 1)} not stored: {error}"
            if attempt == 1:
                time.sleep(RETRY_PAUSE_S)
    return SendResult(to=shown_url(to), ok=False, files=len(paths), attempts=2, error=_scrubbed(error, to),
                      stored=len(stored))


def send_c_store(paths: Sequence[Path], destination: str, calling_aet: str = "MVCF") -> SendResult:
    called, host, port = parse_ae(destination)
    need("pynetdicom", "--send")
    return _twice(destination, paths, lambda files, stored: _c_store(files, called, host, port, calling_aet,
                                                                       stored))


def send_stow(paths: Sequence[Path], url: str) -> SendResult:
    need("dicomweb_client", "--dicomweb")
    return _twice(url, paths, lambda files, stored: _stow(files, url, stored))


def send_all(paths: Sequence[Path], send: Optional[str], dicomweb: Optional[str],
             calling_aet: str = "MVCF") -> list[SendResult]:
    results = []
    if send:
        results.append(send_c_store(paths, send, calling_aet))
    if dicomweb:
        results.append(send_stow(paths, dicomweb))
    return results


def retrieve_study(url: str, study_uid: str, folder: Path) -> list[Path]:
    """WADO-RS: every instance of `study_uid` from the DICOMweb base `url` into the new folder `folder`
    (one file per instance, named by SOP Instance UID), tried twice; a one-line MVCFError when it fails, and
    then no folder is left behind."""
    web = need("dicomweb_client", "--retrieve-study")
    check_uid(study_uid, "--retrieve-study")
    folder = Path(folder)
    if folder.exists():
        raise MVCFError(f"--retrieve-study writes the study into --ct {folder}, which already exists (to read "
                        "a study retrieved there before, leave out --retrieve-study; else choose a new folder)")
    written: list[Path] = []
    outcome = _twice(url, [], lambda _files, _stored: _retrieve(web, url, study_uid, folder, written))
    if not outcome.ok:
        raise MVCFError(f"cannot retrieve study {study_uid} from {shown_url(url)} (2 attempts): {outcome.error}")
    return written


def _retrieve(web, url: str, study_uid: str, folder: Path, written: list[Path]) -> None:
    """One attempt. A file is named by its SOP Instance UID only once that is a UID (a server's answer is
    never a path), and two instances with one UID are refused, not merged."""
    import warnings

    import requests

    from mvcf.fileio import atomic_dir

    written.clear()
    client = _client(web, url)
    with atomic_dir(folder) as tmp:
        try:
            with warnings.catch_warnings():   # pydicom's multi-line notes on odd values: checked below instead
                warnings.simplefilter("ignore", UserWarning)
                for ds in client.iter_study(study_uid, media_types=(("application/dicom", "*"),)):  # as stored
                    uid = check_uid(str(ds.get("SOPInstanceUID", "")), "the server sent an instance whose UID")
                    name = f"{uid}.dcm"
                    if (tmp / name).exists():
                        raise MVCFError(f"the server sent two instances with the SOP Instance UID {uid}")
                    ds.save_as(tmp / name, enforce_file_format=True)
                    written.append(folder / name)
        except requests.RequestException as exc:   # an OSError to Python; a network error, not a write error
            raise MVCFError(_first_line(exc)) from None
        if not written:
            raise MVCFError(f"the server holds no instance of study {study_uid}")
