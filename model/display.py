"""Defines how an untrusted name (a file name, a record key, a class name) is shown to a person, on a terminal or in
HTML: characters that move the cursor, ring, recolour, reorder or hide text are written out as escapes, and a long
name is shortened in the middle.

A file name is the attacker's text: ESC and OSC sequences retitle or recolour a terminal, a newline fakes an output
line, a right-to-left override makes `rtl\u202egnp.exe` read as `rtlexe.png`. Showing such characters as `\\u202e`
makes the name read as what it is. Escaping for HTML is the page's job (pipeline.report.page); this module never
drops a character, it only makes it visible.
"""

import unicodedata

# Unicode categories shown as escapes: controls (C0, DEL, C1), format characters (bidirectional overrides and
# isolates, zero-width joiners, the byte-order mark), line and paragraph separators, and lone surrogates.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Names longer than this are shortened for display (the whole name is in the output's rows).
DISPLAY_LIMIT = 120


def visible(text: str) -> str:
    """`text` with every control, format or separator character written as \\xNN or \\uNNNN."""
    if text.isprintable() and not any(unicodedata.category(ch) in _HIDDEN_CATEGORIES for ch in text):
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch for ch in text)


def _escape(ch: str) -> str:
    point = ord(ch)
    if point < 0x100:
        return f"\\x{point:02x}"
    return f"\\u{point:04x}" if point < 0x10000 else f"\\U{point:08x}"


def shortened(text: str, limit: int = DISPLAY_LIMIT) -> str:
    """visible(text), cut in the middle to at most about `limit` characters, saying how many were left out."""
    shown = visible(text)
    if len(shown) <= limit:
        return shown
    keep = max(limit - 24, 8)
    head, tail = shown[: keep * 2 // 3], shown[len(shown) - keep // 3:]
    return f"{head}…[{len(shown) - len(head) - len(tail):,} more]…{tail}"


def is_shortened(text: str, limit: int = DISPLAY_LIMIT) -> bool:
    """Would shortened(text, limit) leave characters out?"""
    return len(visible(text)) > limit
