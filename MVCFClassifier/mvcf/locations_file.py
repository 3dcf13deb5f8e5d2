"""A locations file: the vertebrae of one CT that one `mvcf predict --locations FILE` run classifies.

JSON (a list of objects) or CSV (a header row, one row per vertebra). Each entry has a `name` and exactly one
of `point_lps`, `point_ras`, `point_ijk` (three numbers: a JSON list, or the text "X,Y,Z" / "X Y Z"),
`box_lps` (two opposite LPS corners: [[x, y, z], [x, y, z]] or the text of six numbers; a Slicer ROI) or
`mask` with `label`; `heatmap` (optional) names a Grad-CAM output file for that vertebra, `views`
(optional) a folder for the model input it used (one NIfTI per grid and window). Relative `mask`, `heatmap`
and `views` paths resolve against the file's folder. The whole file is checked before any work starts:
a malformed file is the user's to fix, while a vertebra that cannot be found (absent label, point outside
the CT) only fails that entry later.

    [{"name": "L1", "mask": "seg.nii.gz", "label": 31, "heatmap": "L1_heat.nii.gz"},
     {"name": "L2", "point_lps": [-1.5, 20.0, -310.2]}]

    name,point_lps,mask,label
    L1,,seg.nii.gz,31
    L2,"-1.5,20,-310.2",,
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from mvcf.cohort_checks import holds_control_character, surplus_cells
from mvcf.errors import MVCFError, spelling
from mvcf.locate import VertebraQuery, parse_point

__all__ = ["FIELDS", "HEATMAP_SUFFIXES", "POINT_FIELDS", "VertebraQuery", "parse_entries", "parse_entry",
           "read_locations", "write_locations"]

POINT_FIELDS = {"point_lps": "lps", "point_ras": "ras", "point_ijk": "ijk"}
FIELDS = ("name", *POINT_FIELDS, "box_lps", "mask", "label", "heatmap", "views")
HEATMAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def _label(value: Any, what: str) -> int:
    """A vertebra's label value, checked as `--label` is (1 to 2^31 - 1) when the file is read."""
    from mvcf.cli.args import RANGES

    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        label = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        label = value
    elif isinstance(value, float) and value.is_integer():
        label = int(value)
    else:
        raise MVCFError(f"{what} must be an integer label value, got {value!r}")
    low, high = RANGES["label"]
    if not low <= label <= high:
        raise MVCFError(f"{what} {label} is not a vertebra's label (labels are {low} to {high}; 0 is a mask's "
                        "background)")
    return label


def _name(value: Any, where: str) -> str:
    """A vertebra's name: text without control characters (a newline split the error lines that name it, a
    NUL reached the report's fonts)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise MVCFError(f"{where} needs a name")
    if not isinstance(value, str):
        raise MVCFError(f"{where} name must be text, got {value!r}")
    if holds_control_character(value):
        raise MVCFError(f"{where} name {value!r} holds a control character (newline, tab, ...)")
    return value.strip()


def _box(value: Any, what: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Two opposite corners (LPS mm) from [[x, y, z], [x, y, z]], six numbers, or their text."""
    if isinstance(value, str):
        value = [p for p in re.split(r"[,;\s\[\]()]+", value.strip()) if p]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(c, (list, tuple)) for c in value):
        corners = value
    elif isinstance(value, (list, tuple)) and len(value) == 6:
        corners = (value[:3], value[3:])
    else:
        raise MVCFError(f"{what} must be two corners [[x, y, z], [x, y, z]] (LPS mm), got {value!r}"[:300])
    low, high = (tuple(float(v) for v in parse_point(c, f"{what} corner")) for c in corners)
    return low, high


def _path(value: Any, base: Path, what: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise MVCFError(f"{what} must be a file path, got {value!r}")
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else base / path


def _output_path(value: Any, base: Path, what: str) -> Path:
    """An output path (heatmap file, views folder): a relative one must stay inside the file's folder (no
    '../' escapes)."""
    from mvcf.outputs_guard import inside_folder

    path = _path(value, base, what)
    relative = Path(str(value).strip()).expanduser()
    return path if relative.is_absolute() else inside_folder(relative, base, what)


def parse_entry(entry: Any, base: Path, where: str) -> VertebraQuery:
    """One entry (a mapping; empty/None values count as absent) -> VertebraQuery, or an MVCFError naming
    `where` (e.g. 'locations.json entry 3')."""
    if not isinstance(entry, Mapping):
        raise MVCFError(f"{where} must be an object with a name and a location, got {entry!r}")
    given = {str(k): v for k, v in entry.items() if v is not None and not (isinstance(v, str) and not v.strip())}
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise MVCFError(f"{where} has unknown field(s) {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
    name = _name(given.get("name"), where)
    where = f"{where} ({name})"
    kinds = [k for k in (*POINT_FIELDS, "box_lps", "mask") if k in given]
    if len(kinds) != 1:
        raise MVCFError(f"{where} needs exactly one of {', '.join(POINT_FIELDS)}, box_lps or mask, got "
                        f"{', '.join(kinds) or 'none'}")
    heatmap = _output_path(given["heatmap"], base, f"{where} heatmap") if "heatmap" in given else None
    if heatmap is not None and not heatmap.name.endswith(HEATMAP_SUFFIXES):
        raise MVCFError(f"{where} heatmap must name a {', '.join(HEATMAP_SUFFIXES)} file, got {heatmap.name}")
    views = _output_path(given["views"], base, f"{where} views") if "views" in given else None
    if kinds[0] == "mask":
        if "label" not in given:
            raise MVCFError(f"{where} has a mask but no label (the vertebra's label value, e.g. 31 for L1 "
                            "in TotalSegmentator)")
        return VertebraQuery(name=name, mask=_path(given["mask"], base, f"{where} mask"),
                             label=_label(given["label"], f"{where} label"), heatmap=heatmap, views=views)
    if "label" in given:
        raise MVCFError(f"{where}: a label applies only with a mask")
    if kinds[0] == "box_lps":
        return VertebraQuery(name=name, box=_box(given["box_lps"], f"{where} box_lps"), heatmap=heatmap,
                             views=views)
    return VertebraQuery(name=name, point=tuple(float(v) for v in parse_point(given[kinds[0]], f"{where} {kinds[0]}")),
                         unit=POINT_FIELDS[kinds[0]], heatmap=heatmap, views=views)


def parse_entries(entries: Sequence[Any], base: Path, source: str = "locations",
                  inputs: Sequence[Any] = ()) -> list[VertebraQuery]:
    """Every entry checked; an empty list, two entries of one name (also in another letter case), two entries
    writing the same heatmap file or views folder, an output that is (or holds) any entry's mask or one of the
    run's other `inputs` (the CT, the model), or an existing file or folder mvcf did not write are refused
    (mvcf.outputs_guard)."""
    from mvcf.limits import check_count
    from mvcf.outputs_guard import check_output, check_outputs_distinct, check_outside_folders

    if not entries:
        raise MVCFError(f"{source} names no vertebra")
    check_count(f"{source} lists {len(entries):,} vertebrae; that", len(entries), "MAX_LOCATIONS")
    queries = [parse_entry(entry, base, f"{source} entry {i + 1}") for i, entry in enumerate(entries)]
    first: dict[str, int] = {}
    for i, query in enumerate(queries):   # the results, the report and the SR tell vertebrae apart by name
        earlier = first.setdefault(spelling(query.name), i)
        if earlier != i:
            names = {queries[earlier].name: None, query.name: None}
            raise MVCFError(f"{source} entries {earlier + 1} and {i + 1} are both named "
                            f"{' / '.join(map(repr, names))}: their results could not be told apart; give each "
                            "vertebra its own name")
    outputs = [(f"{source} entry {i + 1} ({q.name}) {field}", path, kind)
               for i, q in enumerate(queries)
               for field, path, kind in (("heatmap", q.heatmap, "file"), ("views", q.views, "folder"))
               if path is not None]
    masks = [q.mask for q in queries if q.mask is not None]
    check_outputs_distinct([(what, path) for what, path, _ in outputs], masks)
    for what, folder, kind in outputs:   # a views folder is written as a whole: nothing of another entry in it
        if kind == "folder":
            check_outside_folders([(w, p) for w, p, _ in outputs if w != what], [(what, folder)])
    for what, path, kind in outputs:
        check_output(path, [*inputs, *masks], kind=kind, overwrite=True, what=what)
    return queries


def _csv_rows(text: str, source: str) -> list[dict]:
    from mvcf.cohort_checks import check_header

    reader = csv.DictReader(text.splitlines())
    check_header(reader.fieldnames or [], source)
    header = [h.strip() for h in reader.fieldnames or []]
    if "name" not in header:
        raise MVCFError(f"{source} is neither a JSON list nor a CSV file with a header row naming 'name' and a "
                        f"location column ({', '.join(FIELDS[1:])})")
    rows = []
    for row in reader:
        surplus = surplus_cells(row)
        if surplus:
            raise MVCFError(f"{source} line {reader.line_num}: {surplus}")
        cells = {k.strip(): v for k, v in row.items() if k is not None}
        if any(v and v.strip() for v in cells.values()):
            rows.append(cells)
    return rows


def read_locations(path: Union[str, Path], inputs: Sequence[Any] = ()) -> list[VertebraQuery]:
    """Read and check a locations file (JSON if it starts with '[' or '{', else CSV with a header);
    `inputs`: the run's other inputs, which no heatmap or views path may be."""
    path = Path(path)
    if not path.is_file():
        raise MVCFError(f"locations file not found: {path}")
    from mvcf.limits import check_file_size

    check_file_size(path, "MAX_TABLE_BYTES", "locations file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MVCFError(f"cannot read the locations file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if text.lstrip().startswith(("[", "{")):
        from mvcf.json_input import JSONInputError, loads

        try:
            entries = loads(text)
        except JSONInputError as exc:
            raise MVCFError(f"{path} is not valid JSON: {exc.reason}") from None
        if not isinstance(entries, list):
            raise MVCFError(f"{path} must hold a JSON list of vertebrae, e.g. "
                            '[{"name": "L1", "mask": "seg.nii.gz", "label": 31}]')
    else:
        entries = _csv_rows(text, str(path))
    return parse_entries(entries, path.resolve().parent, path.name, [path, *inputs])


def write_locations(path: Union[str, Path], queries: Sequence[VertebraQuery]) -> Path:
    """Write `queries` as a JSON locations file (atomically)."""
    from mvcf.fileio import write_text

    write_text(path, json.dumps([q.to_dict() for q in queries], indent=2) + "\n")
    return Path(path)
