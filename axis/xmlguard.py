"""The only way bytes become an XML tree: a cheap structural pre-check, then a hardened parser.

The pre-check reads the raw bytes once, without building anything, and refuses what would make
the parser or canonicaliser expensive or dangerous: too many bytes, too deep, too many elements or comments,
attributes or namespace declarations, oversized text runs, any DTD (and so any entity, external
or not), any processing instruction but the XML declaration, encodings other than UTF-8. Only
then does libxml2 see the document, with entity resolution, DTD loading and network access off.
It never "recovers": the first fault is reported with its line and column.

After parsing, a comment followed by text in the same element (``<OrganId>000.00<!---->.00.G22</OrganId>``,
or a comment before a value) is refused. Canonicalisation drops comments, so such a value would be
signed as one string and read by naive code (``element.text``) as another.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from axis.errors import XMLRefused

MiB = 1024 * 1024


@dataclass(frozen=True)
class XMLLimits:
    """Bounds applied before any parsing. Defaults follow DESIGN.md's limits."""

    max_bytes: int = 64 * MiB
    """Largest document accepted, in bytes."""
    max_depth: int = 64
    """Deepest element nesting; edXML needs about 8."""
    max_nodes: int = 20_000
    """Elements, comments and CDATA sections in the whole document (comments are unsigned but still cost)."""
    max_attributes: int = 64
    """Attributes on one element, namespace declarations not counted (they have their own limit)."""
    max_namespace_declarations: int = 256
    """``xmlns`` declarations in the whole document; each multiplies canonicalisation work."""
    max_text_bytes: int = 64 * MiB
    """Longest run of character data between two pieces of markup (base64 attachments are long)."""
    max_name_bytes: int = 256
    """Longest element or attribute name."""


DEFAULT_LIMITS = XMLLimits()

_WS = b" \t\r\n"
_NAME = re.compile(rb"[^\s/>=<\"']+")
_ATTRIBUTE = re.compile(rb"""[ \t\r\n]+([^\s/>=<"']+)[ \t\r\n]*=[ \t\r\n]*(?:"[^"<]*"|'[^'<]*')""")
_ATTRIBUTES = re.compile(rb"""(?:[ \t\r\n]+[^\s/>=<"']+[ \t\r\n]*=[ \t\r\n]*(?:"[^"<]*"|'[^'<]*'))*""")
_TAG_END = re.compile(rb"[ \t\r\n]*(/?)>")
_ENCODING = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*["']([A-Za-z0-9._-]+)["']""")


def position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in bytes) of ``offset``; computed only when reporting a fault."""
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def _refuse(code: str, data: bytes, offset: int, fault: str) -> XMLRefused:
    line, column = position(data, offset)
    return XMLRefused(code, f"line {line}, column {column}: {fault}", line=line, column=column)


def _too_many_nodes(data: bytes, offset: int, limits: XMLLimits) -> XMLRefused:
    return _refuse(
        "xml.too_many_nodes",
        data,
        offset,
        f"more than {limits.max_nodes} elements, comments and CDATA sections",
    )


def _is_declaration(data: bytes, at: int) -> bool:
    return data.startswith(b"<?xml", at) and data[at + 5 : at + 6] in (b" ", b"\t", b"\r", b"\n", b"?")


def _xml_declaration_end(data: bytes, start: int) -> int:
    """Check the XML declaration at ``start`` (UTF-8 only) and return the offset after it."""
    end = data.find(b"?>", start)
    if end < 0:
        raise _refuse("xml.malformed", data, start, "the XML declaration is never closed with '?>'")
    declared = _ENCODING.search(data, start, end)
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        name = declared.group(1).decode("ascii")
        raise _refuse(
            "xml.encoding", data, declared.start(1), f"encoding {name!r} declared; only UTF-8 is accepted"
        )
    return end + 2


def precheck(data: bytes, limits: XMLLimits = DEFAULT_LIMITS) -> None:
    """Refuse ``data`` unless it stays inside ``limits`` and carries no DTD or processing instruction.

    This is not a well-formedness check (the parser does that, and names the fault better) but it
    never lets through a document that breaks a limit, whatever else is wrong with it.
    """
    size = len(data)
    if size > limits.max_bytes:
        raise XMLRefused(
            "xml.too_large", f"the document is {size} bytes; the limit is {limits.max_bytes} bytes", size=size
        )
    if size == 0:
        raise XMLRefused("xml.malformed", "the document is empty")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise XMLRefused("xml.encoding", "the document is UTF-16 or UTF-32; only UTF-8 is accepted")
    pos = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if _is_declaration(data, pos):
        pos = _xml_declaration_end(data, pos)

    depth = nodes = namespaces = 0
    root_seen = False
    while True:
        lt = data.find(b"<", pos)
        stop = size if lt < 0 else lt
        if stop - pos > limits.max_text_bytes:
            raise _refuse(
                "xml.text_too_large", data, pos, f"a text run exceeds {limits.max_text_bytes} bytes"
            )
        if depth == 0:
            stray = data[pos:stop].lstrip(_WS)
            if stray:
                where = stop - len(stray)
                place = (
                    "before the XML declaration"
                    if data.startswith(b"<?xml", stop)
                    else "outside the root element"
                )
                raise _refuse("xml.malformed", data, where, f"{len(stray)} stray bytes {place}")
        if lt < 0:
            break
        marker = data[lt + 1 : lt + 2]
        if marker == b"/":
            end = data.find(b">", lt)
            if end < 0:
                raise _refuse("xml.malformed", data, lt, "the document ends inside an end tag")
            depth -= 1
            pos = end + 1
            continue
        if marker == b"?":
            if _is_declaration(data, lt):
                raise _refuse(
                    "xml.malformed", data, lt, "the XML declaration is allowed only at the very start"
                )
            raise _refuse("xml.pi_forbidden", data, lt, "processing instructions are not accepted")
        if marker == b"!":
            nodes += 1
            if nodes > limits.max_nodes:
                raise _too_many_nodes(data, lt, limits)
            if data.startswith(b"<!--", lt):
                end = data.find(b"-->", lt + 4)
                if end < 0:
                    raise _refuse("xml.malformed", data, lt, "the document ends inside a comment")
                pos = end + 3
            elif data.startswith(b"<![CDATA[", lt):
                end = data.find(b"]]>", lt + 9)
                if end < 0:
                    raise _refuse("xml.malformed", data, lt, "the document ends inside a CDATA section")
                if end - lt > limits.max_text_bytes:
                    raise _refuse(
                        "xml.text_too_large",
                        data,
                        lt,
                        f"a CDATA section exceeds {limits.max_text_bytes} bytes",
                    )
                pos = end + 3
            elif data.startswith(b"<!DOCTYPE", lt):
                raise _refuse(
                    "xml.dtd_forbidden",
                    data,
                    lt,
                    "a DTD (<!DOCTYPE) is not accepted: no entities, no external subsets",
                )
            else:
                raise _refuse("xml.malformed", data, lt, "unexpected '<!' markup")
            continue

        name = _NAME.match(data, lt + 1)
        if name is None:
            raise _refuse("xml.malformed", data, lt, "'<' is not followed by an element name")
        if name.end() - name.start() > limits.max_name_bytes:
            raise _refuse(
                "xml.malformed", data, lt, f"an element name is longer than {limits.max_name_bytes} bytes"
            )
        if depth == 0 and root_seen:
            raise _refuse("xml.malformed", data, lt, "a second root element")
        root_seen = True
        nodes += 1
        if nodes > limits.max_nodes:
            raise _too_many_nodes(data, lt, limits)
        # The attributes are matched as one run, then named in one pass: two calls into the regex
        # engine per element, not several per attribute (a tag of 60 attributes cost 60 loops).
        run = _ATTRIBUTES.match(data, name.end())  # always matches: the run may be empty
        cursor = run.end() if run is not None else name.end()
        if cursor > name.end():
            names = _ATTRIBUTE.findall(data, name.end(), cursor)
            declared = [n for n in names if n == b"xmlns" or n.startswith(b"xmlns:")] if b"xmlns" in data[name.end() : cursor] else []
            if len(names) - len(declared) > limits.max_attributes:
                raise _refuse(
                    "xml.too_many_attributes", data, lt, f"more than {limits.max_attributes} attributes on one element"
                )
            namespaces += len(declared)
            if namespaces > limits.max_namespace_declarations:
                raise _refuse(
                    "xml.too_many_namespaces",
                    data,
                    lt,
                    f"more than {limits.max_namespace_declarations} namespace declarations",
                )
        tag_end = _TAG_END.match(data, cursor)
        if tag_end is None:
            fault = "the document ends inside a start tag" if cursor >= size else "a start tag cannot be read"
            raise _refuse("xml.malformed", data, min(cursor, size - 1), fault)
        if not tag_end.group(1):
            depth += 1
            if depth > limits.max_depth:
                raise _refuse("xml.too_deep", data, lt, f"elements nest deeper than {limits.max_depth}")
        pos = tag_end.end()

    if not root_seen:
        raise XMLRefused("xml.malformed", "the document has no root element")
    # An element left open (depth > 0 here) breaks no limit: libxml2 names the fault and its line
    # ("Opening and ending tag mismatch: From line 7 and MessageHeader"), which a count cannot.


_local = threading.local()


_COMPILING = threading.Lock()


def compile_schema(document: etree._Element | etree._ElementTree) -> etree.XMLSchema:
    """Compile an XSD, one at a time in the process: libxml2 compiling two schemas at once in two
    threads (the adapters verify in threads) can corrupt its type tables, and every later compile
    then fails."""
    with _COMPILING:
        return etree.XMLSchema(document)


def parser() -> etree.XMLParser:
    """This thread's hardened parser: no entities, no DTD, no network, no recovery.

    ``huge_tree`` only lifts libxml2's own 10 MB text-node cap; the pre-check's limits apply first.
    """
    cached: etree.XMLParser | None = getattr(_local, "parser", None)
    if cached is None:
        cached = new_parser()
        _local.parser = cached
    return cached


def new_parser() -> etree.XMLParser:
    """A hardened parser of one's own, for feeding a document piece by piece (see ``parser``)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=True,
        recover=False,
        collect_ids=False,
        remove_comments=False,
        remove_pis=False,
    )


def parse(
    source: bytes | Path, limits: XMLLimits = DEFAULT_LIMITS, *, seen: Callable[[bytes], None] | None = None
) -> etree._Element:
    """Pre-check, parse and return the root element of ``source``; raise ``XMLRefused`` otherwise.

    ``seen``, when given, is shown the raw bytes first (a caller's own glance, or its digest). A
    file is read once for that and the pre-check, then let go and parsed from the file, so a large
    package's bytes and its tree are never held at once."""
    data = source if isinstance(source, bytes) else source.read_bytes()
    if seen is not None:
        seen(data)
    precheck(data, limits)
    try:
        if isinstance(source, bytes):
            root = etree.fromstring(data, parser())
        else:
            del data
            root = etree.parse(str(source), parser()).getroot()
    except etree.XMLSyntaxError as error:
        line, column = error.position
        fault = re.sub(r", line \d+, column \d+$", "", error.msg)
        code = "xml.encoding" if "UTF-8" in fault or "encoding" in fault.lower() else "xml.malformed"
        raise XMLRefused(code, f"line {line}, column {column}: {fault}", line=line, column=column) from None
    for comment in root.iter(etree.Comment):
        parent = comment.getparent()
        if parent is not None and (comment.tail or "").strip():
            comment_line = comment.sourceline if isinstance(comment.sourceline, int) else 0
            raise XMLRefused(
                "xml.comment_in_value",
                f"line {comment_line}: a comment inside the value of <{etree.QName(parent).localname}> is not accepted",
                line=comment_line,
            )
    return root


_ASCII_WHITESPACE = str.maketrans("", "", " \t\r\n")


def base64_binary(text: str | None) -> bytes:
    """Decode an XML base64 value (line breaks allowed, nothing else); raise ``ValueError`` if invalid."""
    try:
        return base64.b64decode((text or "").translate(_ASCII_WHITESPACE), validate=True)
    except binascii.Error as error:
        raise ValueError(str(error)) from None


_BASE64_PIECE = 1 << 20


def base64_size(text: str | None) -> int:
    """What ``base64_binary`` would decode to, in bytes, without holding the decoded bytes (nor a
    copy of ``text``): checked a piece at a time; raise ``ValueError`` where it would."""
    text = text or ""
    size, carry, padded, more = 0, "", False, 0
    try:
        for start in range(0, len(text), _BASE64_PIECE):
            piece = text[start : start + _BASE64_PIECE].translate(_ASCII_WHITESPACE)
            if padded:  # only more "=" may follow (counted: past a few, more change nothing)
                if piece.strip("="):
                    raise ValueError("Discontinuous padding not allowed")
                more += len(piece)
                continue
            piece = carry + piece
            if "=" in piece:  # the end: decoded whole below, as the one-piece decoder would
                padded, carry = True, piece
                continue
            whole = max(0, len(piece) - len(piece) % 4 - 4)  # the last quad waits: padding may follow it
            size += len(base64.b64decode(piece[:whole], validate=True))
            carry = piece[whole:]
        if carry:
            size += len(base64.b64decode(carry + "=" * min(more, 8), validate=True))
    except binascii.Error as error:
        raise ValueError(str(error)) from None
    return size

