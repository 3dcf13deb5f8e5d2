"""Send DICOM files to a PACS: C-STORE (pynetdicom) to AET@HOST:PORT, or STOW-RS (dicomweb-client) to a
DICOMweb base URL; and fetch a study by its StudyInstanceUID (WADO-RS) to read it as the CT. Each send is tried twice (one retry after a short pause); a failure is reported as a
result, never raised, so the files already written stay where they are and the caller decides the exit code."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from mvcf.dicom.source import need
from mvcf.errors import MVCFError

RETRY_PAUSE_S = 1.0
_AE = re.compile(r"^([^@]{1,16})@([^:@]+):(\d{1,5})$")


@dataclass
class SendResult:
    to: str
    ok: bool
    files: int
    attempts: int
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def parse_ae(text: str) -> tuple[str, str, int]:
    """'AET@HOST:PORT' -> (AE title, host, port), or a one-line MVCFError."""
    match = _AE.match(text.strip())
    if not match or not 0 < int(match.group(3)) < 65536 or not match.group(1).strip():
        raise MVCFError(f"--send wants AET@HOST:PORT (AE title of at most 16 characters), got {text!r}")
    return match.group(1).strip(), match.group(2), int(match.group(3))


def _c_store(paths: Sequence[Path], called: str, host: str, port: int, calling: str) -> None:
    pynetdicom = need("pynetdicom", "--send")
    import pydicom
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    datasets = [pydicom.dcmread(path) for path in paths]
    ae = pynetdicom.AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    wanted = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in sorted(wanted):
        if not issubclass(uid_to_service_class(sop_class), StorageServiceClass):
            raise MVCFError(f"SOP class {sop_class} is not a storage SOP class")
        ae.add_requested_context(sop_class, [syntax, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate(host, port, ae_title=called)
    if not assoc.is_established:
        raise MVCFError(f"association with {called}@{host}:{port} was rejected or timed out")
    try:
        for path, ds in zip(paths, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise MVCFError(f"no C-STORE response for {path.name}")
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise MVCFError(f"C-STORE of {path.name} failed with status 0x{code:04X}")
    finally:
        assoc.release()


def _stow(paths: Sequence[Path], url: str) -> None:
    web = need("dicomweb_client", "--dicomweb")
    import pydicom

    client = web.DICOMwebClient(url=url.rstrip("/"))
    client.store_instances(datasets=[pydicom.dcmread(path) for path in paths])


def _twice(to: str, paths: Sequence[Path], send) -> SendResult:
    error = ""
    for attempt in (1, 2):
        try:
            send()
            return SendResult(to=to, ok=True, files=len(paths), attempts=attempt)
        except Exception as exc:  # network, protocol and HTTP errors of two libraries: reported, not raised
            error = (str(exc).splitlines() or [type(exc).__name__])[0][:300] or type(exc).__name__
            if attempt == 1:
                time.sleep(RETRY_PAUSE_S)
    return SendResult(to=to, ok=False, files=len(paths), attempts=2, error=error)


def send_c_store(paths: Sequence[Path], destination: str, calling_aet: str = "MVCF") -> SendResult:
    called, host, port = parse_ae(destination)
    need("pynetdicom", "--send")
    return _twice(destination, paths, lambda: _c_store(paths, called, host, port, calling_aet))


def send_stow(paths: Sequence[Path], url: str) -> SendResult:
    need("dicomweb_client", "--dicomweb")
    return _twice(url, paths, lambda: _stow(paths, url))


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
    folder = Path(folder)
    if folder.exists():
        raise MVCFError(f"--retrieve-study writes the study into --ct {folder}, which already exists")
    written: list[Path] = []
    outcome = _twice(url, [], lambda: _retrieve(web, url, study_uid, folder, written))
    if not outcome.ok:
        raise MVCFError(f"cannot retrieve study {study_uid} from {url} (2 attempts): {outcome.error}")
    return written


def _retrieve(web, url: str, study_uid: str, folder: Path, written: list[Path]) -> None:
    from mvcf.fileio import atomic_dir

    written.clear()
    client = web.DICOMwebClient(url=url.rstrip("/"))
    with atomic_dir(folder) as tmp:
        for ds in client.iter_study(study_uid, media_types=(("application/dicom", "*"),)):  # as stored
            name = f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            written.append(folder / name)
        if not written:
            raise MVCFError(f"the server holds no instance of study {study_uid}")
