"""The reader package on disk: what one reader receives, and the checks when it is opened.

    <package>/package.json          study, reader, rounds with this reader's case order, scale, rules
    <package>/cases/<ID>.nii.gz     de-identified CT of each case (opaque ID), centre of the vertebra in JSON
    <package>/aided/outputs.json    model probability and call per case (needed for the aided round only;
    <package>/aided/<ID>_heatmap.nii.gz    the coordinator may hand out aided/ after the washout)
    <package>/answers.json          the reader's ratings (written by mvcf.reader_study.ratings)

A package opens only for the reader it was made for; it holds no case ID, file name, label or institution.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mvcf.errors import MVCFError
from mvcf.reader_study.scale import Scale

PACKAGE_FILE = "package.json"
ANSWERS_FILE = "answers.json"
AIDED_DIR = "aided"
AIDED_FILE = "outputs.json"
CASES_DIR = "cases"
FORMAT = "mvcf-reader-package"
VERSION = 1


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`, or one MVCFError line naming the file."""
    if not path.is_file():
        raise MVCFError(f"{what} not found: {path}")
    from mvcf.json_input import JSONInputError, loads

    try:
        data = loads(path.read_bytes())
    except JSONInputError as exc:
        raise MVCFError(f"{what} {path} is not valid JSON: {exc.reason}") from None
    if not isinstance(data, dict):
        raise MVCFError(f"{what} {path} is not a JSON object")
    return data


@dataclass
class ReaderPackage:
    folder: Path
    data: dict

    @property
    def reader(self) -> str:
        return self.data["reader"]

    @property
    def study_id(self) -> str:
        return self.data["study_id"]

    @property
    def fingerprint(self) -> str:
        return self.data["fingerprint"]

    @property
    def rounds(self) -> list[dict]:
        """[{name, aided, cases: [opaque IDs in this reader's order]}] in reading order."""
        return self.data["rounds"]

    @property
    def scale(self) -> Scale:
        return Scale.from_dict(self.data["scale"])

    @property
    def washout_days(self) -> float:
        return float(self.data.get("washout_days", 0))

    @property
    def allow_revision(self) -> bool:
        return bool(self.data.get("allow_revision", False))

    @property
    def answers_path(self) -> Path:
        return self.folder / ANSWERS_FILE

    def ct_path(self, case: str) -> Path:
        return self.folder / CASES_DIR / f"{case}.nii.gz"

    def center_lps(self, case: str) -> list[float]:
        return list(self.data["cases"][case]["center_lps"])

    def model_output(self, case: str) -> Optional[dict]:
        """{probability, prediction, threshold, warnings, heatmap (absolute path or None)}; MVCFError when
        the aided material has not been delivered."""
        path = self.folder / AIDED_DIR / AIDED_FILE
        if not path.is_file():
            raise MVCFError("the aided round needs the model outputs (the 'aided' folder of the package), which "
                            "are not in this package yet: ask the study coordinator")
        outputs = read_json(path, "model outputs").get("cases", {})
        if case not in outputs:
            raise MVCFError(f"the model outputs of this package have no entry for case {case}")
        out = dict(outputs[case])
        heat = out.get("heatmap")
        out["heatmap"] = str(self.folder / AIDED_DIR / heat) if heat else None
        return out


def open_package(folder: Any, reader: str) -> ReaderPackage:
    """Open `folder` for `reader`; refuse a package made for someone else, or an incomplete one."""
    folder = Path(folder)
    data = read_json(folder / PACKAGE_FILE, "reader package")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise MVCFError(f"{folder / PACKAGE_FILE} is not a reader package of this version "
                        f"(format {data.get('format')!r}, version {data.get('version')!r})")
    for key in ("study_id", "fingerprint", "reader", "rounds", "scale", "cases"):
        if key not in data:
            raise MVCFError(f"reader package {folder} lacks '{key}'")
    if str(reader).strip() != data["reader"]:
        raise MVCFError(f"this package is for reader {data['reader']!r}, not {str(reader).strip()!r}: "
                        "open your own package")
    package = ReaderPackage(folder, data)
    missing = [case for r in package.rounds for case in r["cases"] if not package.ct_path(case).is_file()]
    if missing:
        raise MVCFError(f"reader package {folder} is incomplete: {len(missing)} CT file(s) missing "
                        f"(first: {package.ct_path(missing[0]).name})")
    return package
