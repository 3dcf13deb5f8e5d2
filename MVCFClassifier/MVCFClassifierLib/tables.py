"""Result rows -> vtkMRMLTableNode (typed columns with descriptions), and TSV export through the table
storage node (which also writes the `.schema.tsv` that keeps the types and descriptions)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from mvcf.fileio import atomic_files

# Column type names as in Slicer's table schema, and the python types that map onto them.
_VTK_ARRAYS = {"double": "vtkDoubleArray", "int": "vtkIntArray", "string": "vtkStringArray"}
_ALIASES = {float: "double", "float": "double", "double": "double", int: "int", "int": "int",
            bool: "int", "bool": "int", str: "string", "str": "string", "string": "string", "text": "string"}

Column = Sequence[Any]  # (name, type, description)


#: A column's unit from its name's suffix (Slicer shows it and writes it into the .schema.tsv).
UNITS = {"_mm": "mm", "_hu": "HU", "_s": "s"}


def unit_of(column_name: str) -> str:
    return next((unit for suffix, unit in UNITS.items() if column_name.endswith(suffix)), "")


def table_for(node, ct_node, kind: str):
    """`node` when this run may put its rows there: a table no run has filled yet (the user's choice) or one
    holding the same kind of run ("prediction", "screen") on the same CT. None (a new table) for one holding
    another CT's or another kind's results: refilled, it showed patient B's rows under "Patient A CT MVCF
    results", or a screen replaced the marked vertebrae's results without a word."""
    if node is None:
        return None
    ct, held = node.GetAttribute("MVCFClassifier.ct"), node.GetAttribute("MVCFClassifier.kind")
    if (ct is None and held is None) or (ct == ct_node.GetID() and held == kind):
        return node
    return None


def stamp(node, ct_node, kind: str, disclaimer: str) -> None:
    """Record on a result table which CT and which kind of run it holds, and the research-use notice."""
    node.SetAttribute("MVCFClassifier.ct", ct_node.GetID())
    node.SetAttribute("MVCFClassifier.kind", kind)
    node.SetAttribute("MVCFClassifier.disclaimer", disclaimer)


def _column_type(kind: Any) -> str:
    try:
        return _ALIASES[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unsupported column type {kind!r}: use float, int, bool or str") from None


def _text(value: Any) -> str:
    """One TSV-safe cell: no tab or newline may split a row."""
    return " ".join(str(value).split()) if value is not None else ""


def write_table(scene, rows: Iterable[dict], columns: Sequence[Column], name: str, node=None):
    """Fill a table node with `rows` (dicts keyed by column name) in the order and types of `columns`.

    `columns` is a list of (name, type, description) with type float/int/bool/str (or 'double', 'int',
    'string'). Missing numeric values become NaN (double) or 0 (int); missing text becomes ''. Reuses `node`
    (all its columns are replaced) or adds a vtkMRMLTableNode called `name`. Returns the node.
    """
    import vtk

    specs = [(str(c[0]), _column_type(c[1]), str(c[2]) if len(c) > 2 else "") for c in columns]
    names = [spec[0] for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate column names in {names}")
    rows = list(rows)
    arrays = []
    for column_name, kind, _ in specs:
        array = getattr(vtk, _VTK_ARRAYS[kind])()
        array.SetName(column_name)
        for row in rows:
            value = row.get(column_name)
            if kind == "string":
                array.InsertNextValue(_text(value))
            elif kind == "double":
                array.InsertNextValue(float("nan") if value is None or value == "" else float(value))
            else:
                array.InsertNextValue(0 if value is None or value == "" else int(value))
        arrays.append(array)

    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    else:
        node.SetName(name)
    was_modified = node.StartModify()
    try:
        for index in range(node.GetNumberOfColumns()):
            node.RemoveAllColumnProperties(node.GetColumnName(index))
        node.RemoveAllColumns()
        for array, (column_name, kind, description) in zip(arrays, specs):
            node.AddColumn(array)
            if description:
                node.SetColumnDescription(column_name, description)
            unit = unit_of(column_name)
            if unit:
                node.SetColumnUnitLabel(column_name, unit)
        node.SetUseColumnTitleAsColumnHeader(True)
    finally:
        node.EndModify(was_modified)
    return node


def table_rows(node) -> list[dict]:
    """The rows of a table node as dicts (numbers as float/int, text as str); the inverse of write_table."""
    table = node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for c, column_name in enumerate(names):
            value = table.GetValue(r, c)
            if value.IsNumeric():
                number = value.ToDouble()
                row[column_name] = int(number) if value.IsInt() else number
            else:
                row[column_name] = value.ToString()
        rows.append(row)
    return rows


def save_table_tsv(node, path: Union[str, os.PathLike]) -> list[Path]:
    """Write `node` as TSV (plus `<name>.schema.tsv` with types and descriptions) through a
    vtkMRMLTableStorageNode. Both files appear only once complete. Returns the written paths."""
    import slicer

    target = Path(path)
    if target.suffix.lower() != ".tsv":
        raise ValueError(f"expected a .tsv path, got {target}")
    schema_target = target.with_name(target.stem + ".schema.tsv")
    with atomic_files(target.parent, [schema_target.name, target.name]) as workdir:
        storage = slicer.vtkMRMLTableStorageNode()
        storage.SetFileName(str(workdir / target.name))
        storage.SetSchemaFileName(str(workdir / schema_target.name))
        if not storage.WriteData(node):
            raise OSError(f"could not write table '{node.GetName()}' to {target}")
    return [target, schema_target]
