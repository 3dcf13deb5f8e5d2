"""A real Orthanc (Debian packages `orthanc` + `orthanc-dicomweb`) for tests: temporary folder, generated
configuration, free ports; HTTP answers loopback only (RemoteAccessAllowed false) and C-STORE is accepted
only from the test's AE title on 127.0.0.1 (Orthanc 1.10 has no bind-address option for its DICOM port)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
CALLING_AET = "MVCFTEST"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin library from the Debian package (its file list), else a search of the usual folders."""
    try:
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                return Path(line)
    except FileNotFoundError:
        pass
    for folder in PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if found:
            return found[0]
    return None


@dataclass
class Orthanc:
    process: subprocess.Popen
    http_port: int
    dicom_port: int
    aet: str = "ORTHANC"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes, content_type: str = "application/dicom"):
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def delete(self, path: str) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + path, method="DELETE"), timeout=30).read()

    def file(self, instance_id: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}/instances/{instance_id}/file", timeout=30) as response:
            return response.read()


def start_orthanc(folder: Path) -> Orthanc:
    """Start Orthanc in `folder`; pytest.skip with the reason when it is not installed."""
    binary = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                               if Path(p).exists()), None)
    plugin = dicomweb_plugin()
    if binary is None or plugin is None:
        pytest.skip("Orthanc and its DICOMweb plugin are not installed (Debian packages orthanc, "
                    "orthanc-dicomweb; .ci/run installs them)")
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {"Name": "mvcf-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "HttpServerEnabled": True, "DicomServerEnabled": True,
              "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True,
              "DicomModalities": {"mvcf": [CALLING_AET, "127.0.0.1", 104]},
              "Plugins": [str(plugin)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
              "StableAge": 1, "SaveJobs": False}
    (folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                               cwd=folder)
    server = Orthanc(process, http_port, dicom_port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text(encoding='utf-8')[-2000:]}")
        try:
            server.get("/system")
            server.get("/dicom-web/studies")
            return server
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("Orthanc did not answer within 30 s")


def stop_orthanc(server: Orthanc) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
