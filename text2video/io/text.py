"""Text files a user writes (prompt files, caption files, manifests, configs) read in the encodings they
come in: UTF-8 (with or without a byte-order mark), UTF-16 and UTF-32 with a byte-order mark, and
UTF-16 without one (as some Windows tools write it). Anything else is refused with the file, the line
and the byte that is not UTF-8, never decoded into wrong characters."""

from __future__ import annotations

import codecs
from pathlib import Path

from ..errors import DataError

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _utf16_without_bom(data: bytes) -> str | None:
    """``le`` / ``be`` when ``data`` looks like UTF-16 text of mostly ASCII characters, else None."""
    if len(data) < 4 or len(data) % 2:
        return None
    even, odd = data[0::2], data[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def decode_text(data: bytes, source: str = "text") -> str:
    """``data`` as text (see the module); `DataError` naming ``source`` and the line when it cannot be."""
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), None) or _utf16_without_bom(data) or "utf-8"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        if encoding != "utf-8":
            raise DataError(f"{source} is not valid {encoding.upper()} text ({exc.reason}); save it as UTF-8") from None
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{source}, line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8 (the file is in another "
            "encoding, e.g. Latin-1 or Windows-1252); save it as UTF-8"
        ) from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DataError(f"{source}, line {line}: holds NUL bytes; it looks like a binary file, not text")
    return text


def read_text(path: str | Path, what: str = "") -> str:
    """The text of the file ``path``; ``what`` names it in errors (``prompt file``, ``caption file``, ...)."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {label}: {exc.strerror or exc}") from None
    return decode_text(data, label)


def read_lines(path: str | Path, what: str = "") -> list[str]:
    """The non-empty lines of a text file, stripped."""
    return [line.strip() for line in read_text(path, what).splitlines() if line.strip()]


__all__ = ["decode_text", "read_lines", "read_text"]
