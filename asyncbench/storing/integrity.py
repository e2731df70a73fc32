"""Is a stored file whole and well-formed? Each check returns the problem in a few words, or None.

``store.RunDir`` runs these on what it reads (after the schema migrations), so an edited
``results.csv`` or a hand-damaged ``run.json`` is refused with the file and the problem named,
instead of failing later, deep inside the analysis, with a traceback.
"""

from __future__ import annotations

from dataclasses import MISSING, Field

import pandas as pd

CELL_STATUSES = ("ok", "invalid", "failed")
_NUMERIC = {"int", "float", "int | None", "float | None"}
_REQUIRED_TEXT = ("cell_id", "scenario", "server", "status")
_REQUIRED_NUMBERS = ("users", "repeat")  # older files leave other columns empty


def results_problem(table: pd.DataFrame, record_fields: tuple[Field, ...]) -> str | None:
    """What is wrong with a ``results.csv`` table (``record_fields``: ``CellResult``'s)."""
    missing = [name for name in required_fields(record_fields) if name not in table]
    if missing:
        return f"missing column(s) {', '.join(missing[:5])}"
    for f in record_fields:
        problem = _column_problem(table, f) if f.name in table else None
        if problem:
            return problem
    bad = table.loc[~table["status"].isin(CELL_STATUSES), "status"]
    if len(bad):
        return f"row {_row(bad.index[0])}: status {bad.iloc[0]!r} is not one of {CELL_STATUSES}"
    repeated = table.loc[table["cell_id"].duplicated(), "cell_id"]
    if len(repeated):
        return f"row {_row(repeated.index[0])}: cell {repeated.iloc[0]!r} appears twice"
    return None


def numeric_columns(record_fields: tuple[Field, ...]) -> list[str]:
    return [f.name for f in record_fields if str(f.type) in _NUMERIC]


def _column_problem(table: pd.DataFrame, f: Field) -> str | None:
    column, kind = table[f.name], str(f.type)
    if kind in _NUMERIC:
        numbers = pd.to_numeric(column, errors="coerce")
        bad = column[numbers.isna() & column.notna()]
        if len(bad):
            return f"row {_row(bad.index[0])}, column {f.name}: {bad.iloc[0]!r} is not a number"
        if f.name in _REQUIRED_NUMBERS and numbers.isna().any():
            return f"row {_row(numbers.index[numbers.isna()][0])}, column {f.name}: empty"
    elif kind == "bool":
        bad = column[~column.astype(str).isin(("True", "False"))]
        if len(bad):
            return f"row {_row(bad.index[0])}, column {f.name}: {bad.iloc[0]!r} is not True/False"
    elif f.name in _REQUIRED_TEXT:
        empty = column[column.isna() | (column.astype(str).str.strip() == "")]
        if len(empty):
            return f"row {_row(empty.index[0])}, column {f.name}: empty"
    return None


def _row(index) -> int:
    """The line number in the file (the header is line 1)."""
    return int(index) + 2


def record_problem(data: object, record_fields: tuple[Field, ...], what: str) -> str | None:
    """What is wrong with a JSON object meant to build a dataclass (types of its known keys)."""
    if not isinstance(data, dict):
        return f"{what} is a {type(data).__name__}, not an object"
    for f in record_fields:
        if f.name not in data:
            continue
        value, kind = data[f.name], str(f.type)
        if not _json_type_fits(value, kind):
            return f"{what}.{f.name} is {type(value).__name__} {_short(value)}, expected {kind}"
    return None


def _json_type_fits(value: object, kind: str) -> bool:
    if value is None:
        return "None" in kind
    base = kind.split(" | ")[0].split("[")[0]
    if base in ("int", "float"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    expected = {"str": str, "bool": bool, "dict": dict, "list": list}.get(base)
    return expected is None or isinstance(value, expected)


def required_fields(record_fields: tuple[Field, ...]) -> list[str]:
    return [f.name for f in record_fields if f.default is MISSING and f.default_factory is MISSING]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
