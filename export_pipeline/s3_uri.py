"""S3 object names as error messages show them: exact when printable, escaped otherwise.

A key comes from a file in the bucket (a manifest, a listing), so it can hold
anything S3 allows and more: NUL and other control characters, terminal
escape sequences, up to 1,024 bytes (a manifest may claim longer), even text
that is not UTF-8 (a lone surrogate from a JSON `\\udcXX` escape). Shown
as it is, such a key could hide itself, break a log line or fill a screen.
So a key that is printable, without a backslash, and at most `MAX_SHOWN_KEY` characters is shown
as it is; any other is shown as Python's `repr` escapes it (`\\x00`,
`\\n`, `\\udce9`, backslashes doubled so escaped keys stay apart), and a long
one keeps its start and end around a count of what was left out.
"""

from __future__ import annotations

MAX_SHOWN_KEY = 300
_HEAD = 200  # characters kept from the start of a long key (the rest from its end)


def shown_key(key: str) -> str:
    """`key` as messages show it: printable, at most MAX_SHOWN_KEY characters."""
    text = key if key.isprintable() and "\\" not in key else repr(key)[1:-1]
    if len(text) > MAX_SHOWN_KEY:
        tail = MAX_SHOWN_KEY - _HEAD - 40
        left_out = len(text) - _HEAD - tail
        text = f"{text[:_HEAD]}…[{left_out} characters]…{text[-tail:]}"
    return text


def s3_uri(bucket: str, key: str) -> str:
    """`s3://bucket/key` for a message, the key shown safely (`shown_key`)."""
    return f"s3://{shown_key(bucket)}/{shown_key(key)}"
