"""Read a user's CSV / TSV / JSON Lines / JSON file into a table of string cells.

Only bytes, encodings and file syntax are handled here; what the cells mean (which column is the
text, empty labels, duplicates) is ``file_validation``'s job. Every problem is a ``DataError`` that
names the line or record at fault.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.messages import listing

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
#: Rows a user file may have. Few-shot episodes draw a handful of examples per class; a file of
#: millions of short rows would cost the server a gigabyte and a minute before any run, so it is
#: refused while it is read, as soon as the row after the limit appears.
MAX_ROWS = 200_000

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json", ".ndjson": "json"}
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Row:
    """One parsed record: where it came from (for messages) and its cells as strings."""

    position: int
    cells: dict[str, str]


@dataclass
class Table:
    """A parsed file: column names in file order and its data rows."""

    columns: list[str]
    rows: list[Row]
    unit: str  # "line" for CSV / JSON Lines, "record" for a JSON array


def read_table(source: str | Path | bytes, filename: str | None, max_bytes: int) -> tuple[Table, str]:
    """Parse a path or an upload's bytes; return (table with at least one row, name to show in messages).

    ``filename`` gives the format of raw bytes (and the name shown); the size limit is checked before
    a file on disk is read into memory.
    """
    data, display_name, suffix = _read_source(source, filename, max_bytes)
    file_format = _detect_format(suffix, display_name, data)
    text = _decode(data, display_name)
    table = (
        _parse_json(text, display_name)
        if file_format == "json"
        else _parse_csv(text, display_name, file_format)
    )
    if not table.rows:
        raise DataError(f"The file {display_name} has column names but no data rows.")
    return table, display_name


def _read_source(source: str | Path | bytes, filename: str | None, max_bytes: int) -> tuple[bytes, str, str]:
    """Return (bytes, name to show in messages, lower-case file extension or "")."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        named = filename or ""
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"There is no file at {path}.")
        named = filename or path.name
        _check_size(path.stat().st_size, max_bytes, named)  # before reading a huge file into memory
        data = path.read_bytes()
    else:
        raise DataError(f"Expected a file path or the file's bytes, got {type(source).__name__}.")
    display_name = named or "(uploaded)"
    _check_size(len(data), max_bytes, display_name)
    if not data.strip():
        raise DataError(f"The file {display_name} is empty.")
    return data, display_name, Path(named).suffix.lower()


def _check_size(size: int, max_bytes: int, display_name: str) -> None:
    if size > max_bytes:
        raise DataError(
            f"The file {display_name} is {_human_size(size)}, over the {_human_size(max_bytes)} limit. "
            "Upload a smaller sample, e.g. fewer examples per class."
        )


def _detect_format(suffix: str, display_name: str, data: bytes) -> str:
    """Trust the extension; without one, a leading '{' or '[' means JSON."""
    if suffix in _FORMATS:
        return _FORMATS[suffix]
    if suffix:
        raise DataError(
            f"The file {display_name} has an unsupported type '{suffix}'. Upload a .csv, .tsv, .jsonl or .json file."
        )
    return "json" if data.lstrip(_UTF8_BOM + b" \t\r\n")[:1] in (b"{", b"[") else "csv"


def _decode(data: bytes, display_name: str) -> str:
    body = data.removeprefix(_UTF8_BOM)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start + (len(data) - len(body))
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"The file {display_name} is not UTF-8 text: byte 0x{data[offset]:02X} at offset {offset} (line {line}) "
            "cannot be decoded. Save the file with UTF-8 encoding (in Excel: 'CSV UTF-8') and upload it again."
        ) from None


def _parse_csv(text: str, display_name: str, file_format: str) -> Table:
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if file_format == "tsv" else max(",;\t", key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    quoting_hint = (
        "Texts that contain the delimiter, quotes or line breaks must be wrapped in double quotes, "
        'with quotes inside doubled ("").'
    )
    rows: list[Row] = []
    header: list[str] | None = None
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in fields):
                continue  # blank lines carry no data
            if header is None:
                header = [cell.strip() for cell in fields]
                _check_header(header, display_name)
                continue
            if len(fields) != len(header):
                raise DataError(
                    f"Line {line} of {display_name} has {len(fields)} fields but the header has {len(header)} "
                    f"({', '.join(header)}). {quoting_hint}"
                )
            _check_row_count(len(rows), display_name)
            rows.append(Row(line, dict(zip(header, fields, strict=True))))
    except csv.Error as error:
        raise DataError(
            f"The CSV file {display_name} cannot be parsed at line {start}: {error}. {quoting_hint}"
        ) from None
    if header is None:
        raise DataError(f"The file {display_name} is empty.")
    return Table(columns=header, rows=rows, unit="line")


def _check_row_count(rows_so_far: int, display_name: str) -> None:
    """Refuse a file once it has more data rows than ``MAX_ROWS`` (called before adding each row)."""
    if rows_so_far >= MAX_ROWS:
        raise DataError(
            f"The file {display_name} has more than {MAX_ROWS:,} rows. Few-shot episodes need only a handful of "
            "examples per class: keep a sample (e.g. at most a few hundred rows per class) and try again."
        )


def _check_header(header: list[str], display_name: str) -> None:
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise DataError(
            f"The header of {display_name} repeats the column name(s) {listing(repeated)}; rename them."
        )


def _parse_json(text: str, display_name: str) -> Table:
    """JSON Lines (one object per line) or, if the file starts with '[', one JSON array of objects."""
    example = 'Each record must be an object such as {"text": "...", "label": "..."}.'
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(
                f"The file {display_name} is not valid JSON: {error.msg} at line {error.lineno}."
            ) from None
        if isinstance(records, list) and len(records) > MAX_ROWS:
            _check_row_count(len(records), display_name)
        numbered, unit = list(enumerate(records, start=1)), "record"
    else:
        numbered, unit = [], "line"
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            _check_row_count(len(numbered), display_name)
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise DataError(
                    f"Line {number} of {display_name} is not valid JSON ({error.msg} at column {error.colno}). {example}"
                ) from None
    columns: dict[str, None] = {}  # ordered set: keys in first-seen order
    rows = []
    for number, record in numbered:
        if not isinstance(record, dict):
            raise DataError(
                f"{unit.capitalize()} {number} of {display_name} holds a JSON {_json_type(record)}. {example}"
            )
        columns.update(dict.fromkeys(record))
        rows.append(Row(number, {key: _cell(value, key, unit, number) for key, value in record.items()}))
    return Table(columns=list(columns), rows=rows, unit=unit)


def _cell(value: object, key: str, unit: str, number: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value)
    raise DataError(
        f"{unit.capitalize()} {number}: field '{key}' holds a JSON {_json_type(value)}; texts and labels must be strings."
    )


def _human_size(n_bytes: int) -> str:
    """MB for anything near upload sizes; smaller units only for tiny test limits."""
    if n_bytes >= 2**20:
        return f"{n_bytes / 2**20:.3g} MB"
    return f"{n_bytes / 1024:.3g} KB" if n_bytes >= 1024 else f"{n_bytes} bytes"


def _json_type(value: object) -> str:
    names = {
        list: "array",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
