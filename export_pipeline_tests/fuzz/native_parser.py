"""Coverage-guided fuzzing of the native DynamoDB parser, built with ASan and UBSan.

One command (in the project's virtualenv; it needs gcc and the Python headers,
as the install does, and no network):

    python -m export_pipeline_tests.fuzz.native_parser [--seconds 60] [--seed 0]
        [--corpus DIR] [--findings DIR]
    python -m export_pipeline_tests.fuzz.native_parser --replay FILE

It exits 0 when nothing was found, 1 otherwise. Each run:

1. Builds `export_pipeline/dynamodb/convert/_items.c` with gcc into a temporary folder,
   with AddressSanitizer and UndefinedBehaviorSanitizer (`-fsanitize=address,
   undefined -fno-sanitize-recover=all`: the first error ends the process) and
   gcc's edge instrumentation (`-fsanitize-coverage=trace-pc`), linked with
   `coverage.c` (the edge map the fuzzer reads, and two sanitizer probes).
2. Proves the sanitizers live: a child process reading one byte past a heap
   block, and one overflowing a signed int, must each die with the sanitizer's
   report, or the run fails.
3. Fuzzes for `--seconds` in a child process with the ASan runtime preloaded
   (the Python interpreter is not built with ASan) and `PYTHONMALLOC=malloc`
   (so Python's own allocations are checked too). Each input is a batch of
   full-export lines, or change lines with key attributes, mutated from seeds
   that cover every DynamoDB type, escapes, UTF-8, numbers, deep nesting, large
   and duplicated maps; an input that reaches a new edge (or a new hit count of
   one) joins the corpus. The batch lies in a malloc block of exactly its size,
   so reading one byte past it is caught. Besides the sanitizers, every batch
   the parser accepts is checked against the per-line code (orjson and
   `read`): same columns, same values, same deletes and timestamps;
   declining a batch is always allowed.

A finding is written to `--findings` (default `native-fuzz-findings/`) as a
file that `--replay` runs again; the sanitizer's report is on stderr. With
`--corpus DIR`, the corpus is read from and saved to DIR, so long runs build
on each other.

Why this shape: the machine has gcc (with its ASan and UBSan runtimes) but no
clang, so no libFuzzer (and atheris sees native code's coverage only when it is
compiled by clang). gcc's trace-pc hook gives the coverage feedback instead, and
a Python loop lets the per-line converter be the oracle for what the parser
must produce, not only for whether it crashes.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import mmap
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]
PARSER_SOURCE = REPOSITORY / "export_pipeline" / "dynamodb" / "convert" / "_items.c"
COVERAGE_SOURCE = Path(__file__).with_name("coverage.c")
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fPIC", "-std=c11", "-Wall", *SANITIZE]
LAST_INPUT_BYTES = 1 << 20  # the shared file holding the input under test
MAX_BLOB = 64 << 10
FINDING = 3  # the child's exit code for a difference from the per-line code


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Case:
    """One call of the parser: `parse(blob, rows)` or, with keys, `parse(blob, rows, keys)`."""

    blob: bytes
    rows: int
    keys: tuple[str, ...] | None = None  # None: full-export lines; else change lines

    def encode(self) -> bytes:
        header = {"rows": self.rows, "keys": None if self.keys is None else list(self.keys)}
        return json.dumps(header).encode() + b"\n" + self.blob

    @classmethod
    def decode(cls, data: bytes) -> Case:
        header, _, blob = data.partition(b"\n")
        fields = json.loads(header)
        keys = fields["keys"]
        return cls(blob, int(fields["rows"]), None if keys is None else tuple(keys))


def line_count(blob: bytes) -> int:
    """Lines in a batch as the converter cuts them (a final newline is optional)."""
    if not blob:
        return 0
    return blob.count(b"\n") + (0 if blob.endswith(b"\n") else 1)


def _dumps(value: Any, style: int) -> bytes:
    if style == 0:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if style == 1:
        return json.dumps(value, ensure_ascii=True).encode()  # \uXXXX and surrogate pairs
    return json.dumps(value, separators=(" , ", " : "), ensure_ascii=False).encode()


def _nested(levels: int) -> dict:
    value: dict = {"S": "bottom"}
    for level in range(levels):
        value = {"M": {f"l{level}": value}} if level % 2 else {"L": [value]}
    return value


SEED_ITEMS: list[dict] = [
    {
        "pk": {"S": "o-1"},
        "n": {"N": "1999.50"},
        "b": {"BOOL": True},
        "x": {"NULL": True},
        "bin": {"B": "AQID"},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5", "-0.001"]},
        "bs": {"BS": ["/w==", "AA=="]},
        "m": {"M": {"k": {"S": "v"}, "n": {"N": "1E+20"}, "l": {"L": [{"N": "0.1"}]}}},
        "l": {"L": [{"S": "x"}, {"M": {"b": {"B": "/g=="}}}, {"NULL": True}, {"BOOL": False}]},
    },
    {"pk": {"S": 'é\\"\n\t\u2028😀'}, "unicode ☕": {"S": "\x00\x1f"}, "empty": {"S": ""}},
    {"pk": {"S": "big"}, "n": {"N": "12345678901234567890123456789012345678"}},
    {"pk": {"S": "tiny"}, "n": {"N": "1E-130"}, "m": {"M": {}}, "l": {"L": []}},
    {"pk": {"S": "deep"}, "d": _nested(31)},
    {"pk": {"S": "wide"}, "m": {"M": {f"k{i}": {"N": str(i)} for i in range(70)}}},
    {"pk": {"S": "maps"}, "m": {"M": {f"k{i}": {"S": "v"} for i in range(17)}}},
]
SEED_CHANGES: list[dict] = [
    {
        "Metadata": {"WriteTimestampMicros": {"N": "1764117000000000"}},
        "Keys": {"pk": {"S": "o-1"}},
        "NewImage": SEED_ITEMS[0],
        "OldImage": {"pk": {"S": "o-1"}, "n": {"N": "5"}},
    },
    {
        "Metadata": {"WriteTimestampMicros": {"N": "1764117300000000"}},
        "Keys": {"pk": {"S": "o-2"}},
        "OldImage": SEED_ITEMS[1],
    },
    {
        "Keys": {"pk": {"S": "o-3"}},
        "NewImage": {"v": {"N": "2"}},
        "Metadata": {"WriteTimestampMicros": {"N": "7"}},
    },
]
# Duplicated keys, which dict-based writers cannot produce.
SEED_RAW_ITEM_LINES = [
    b'{"Item":{"pk":{"S":"dup"},"m":{"M":{"a":{"N":"1"},"a":{"N":"2"}}}}}',
    b'{"Item":{"pk":{"S":"esc"},"b":{"B":"\\/w=="},"s":{"S":"a\\/b\\u00e9\\ud83d\\ude00"}}}',
]
TOKENS = [
    *(f'"{tag}"'.encode() for tag in ("S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L")),
    *(x.encode() for x in ("Item", "Keys", "NewImage", "OldImage", "Metadata")),
    b'"WriteTimestampMicros"',
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b'"',
    b"\\",
    b"\\u",
    b"\\ud83d",
    b"\\udc00",
    b"\\u0000",
    b"\n",
    b"\r",
    b" ",
    b"true",
    b"false",
    b"null",
    b"-",
    b"+",
    b".",
    b"e",
    b"E",
    b"0",
    b"9" * 40,
    b"1E+400",
    b"=",
    b"/",
    b"\x00",
    b"\x80",
    b"\xc3",
    b"\xc3\xa9",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80",
    b"\xff",
    b'{"M":{"a":',
    b'{"L":[',
]


def seed_cases() -> list[Case]:
    """Valid batches of both kinds, in each JSON style, with and without a final newline."""
    cases = []
    for style in range(3):
        lines = [_dumps({"Item": item}, style) for item in SEED_ITEMS]
        if style == 0:
            lines += SEED_RAW_ITEM_LINES
        changes = [_dumps(change, style) for change in SEED_CHANGES]
        for blob in (b"\n".join(lines) + b"\n", b"\n".join(lines[:2])):
            cases.append(Case(blob, line_count(blob)))
        for blob in (b"\n".join(changes), b"\n".join(changes) + b"\n"):
            cases.append(Case(blob, line_count(blob), ("pk",)))
    composite = _dumps(
        {
            "Metadata": {"WriteTimestampMicros": {"N": "9"}},
            "Keys": {"pk": {"S": "a"}, "sk": {"N": "2"}},
            "NewImage": {"pk": {"S": "a"}, "x": {"BOOL": True}},
        },
        0,
    )
    cases.append(Case(composite, 1, ("pk", "sk")))
    return cases


_TEXT_PIECES = ["a", "Z", " ", "é", "☕", "😀", "\u2028", "\x00", "\x1f", '"', "\\", "/", "\n", "k"]
# Number texts at the edges of the parser's own rules (and texts that are no number).
_NUMBER_TEXTS = [
    *("0", "-0", "00", "007", "1", "-1", "0.1", "-0.5", "1.50", "1E+20", "1e-6", "1E-130"),
    *("9.99E+125", "0.0001", "1.", ".5", "-", "1e", "abc", "NaN", "", " 1", "1" * 38),
    *("123456789012345", "1234567890123456", "0.1000000000000000000001"),
]
_BASE64 = ["", "AA==", "AQID", "/w==", "/w=", "AB==", "A", "QUJD", "////", "+/+/", "\\/w=="]
_TAGS = ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "M", "L"]


class Mutator:
    """New batches from a small grammar of DynamoDB JSON, and byte-level edits of corpus
    entries; seeded: the same seed gives the same inputs."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def next_case(self, corpus: list[Case]) -> Case:
        """A generated batch one time in five (mostly valid lines), else an edited one."""
        r = self.random
        if r.random() < 0.2:
            keys = r.choice((None, None, ("pk",), ("pk", "sk")))
            return self.generate(keys)
        return self.mutate(r.choice(corpus), corpus)

    def generate(self, keys: tuple[str, ...] | None) -> Case:
        r = self.random
        style = r.randrange(3)
        lines = []
        for _ in range(r.randint(1, 6)):
            item = self._item()
            if keys is None:
                lines.append(_dumps({"Item": item}, style))
                continue
            key_values = {k: item.get(k) or self._value(0, r.choice(("S", "N"))) for k in keys}
            change: dict = {"Metadata": {"WriteTimestampMicros": {"N": str(r.getrandbits(52))}}}
            change["Keys"] = key_values
            if r.random() < 0.7:
                change["NewImage"] = item
            if r.random() < 0.5:
                change["OldImage"] = self._item()
            members = list(change.items())
            r.shuffle(members)
            lines.append(_dumps(dict(members), style))
        blob = b"\n".join(lines) + (b"\n" if r.random() < 0.5 else b"")
        return Case(blob, line_count(blob), keys)

    def _text(self, longest: int = 12) -> str:
        return "".join(
            self.random.choice(_TEXT_PIECES) for _ in range(self.random.randint(0, longest))
        )

    def _number(self) -> str:
        r = self.random
        if r.random() < 0.5:
            return r.choice(_NUMBER_TEXTS)
        digits = "".join(r.choice("0123456789") for _ in range(r.randint(1, 40)))
        cut = r.randint(0, len(digits))
        text = digits[:cut] + ("." + digits[cut:] if cut < len(digits) else "")
        return ("-" if r.random() < 0.3 else "") + text

    def _item(self) -> dict:
        item = {"pk": self._value(0, "S")}
        for _ in range(self.random.randint(0, 6)):
            name = self.random.choice(("pk", "sk", "n", "m", "l", "b", self._text(4)))
            item[name] = self._value(0)
        return item

    def _value(self, depth: int, tag: str | None = None) -> dict:
        r = self.random
        tag = tag or r.choice(_TAGS if depth < 40 else _TAGS[:8])
        many = r.randint(0, 4)
        value: Any
        if tag == "S":
            value = self._text()
        elif tag == "N":
            value = self._number()
        elif tag == "B":
            value = r.choice(_BASE64)
        elif tag in ("BOOL", "NULL"):
            value = r.random() < 0.8
        elif tag == "SS":
            value = [self._text() for _ in range(many)]
        elif tag == "NS":
            value = [self._number() for _ in range(many)]
        elif tag == "BS":
            value = [r.choice(_BASE64) for _ in range(many)]
        elif tag == "M":
            value = {self._text(3): self._value(depth + 1) for _ in range(r.choice((0, 1, 2, 20)))}
        else:
            value = [self._value(depth + 1) for _ in range(many)]
        return {tag: value}

    def mutate(self, case: Case, corpus: list[Case]) -> Case:
        r = self.random
        blob = bytearray(case.blob)
        for _ in range(r.choice((1, 1, 2, 3, 4, 8))):
            self._edit(blob, r.choice(corpus).blob)
        data = bytes(blob[:MAX_BLOB])
        rows = line_count(data)
        if r.random() < 0.03:
            rows = max(0, rows + r.choice((-1, 1)))
        return Case(data, rows, case.keys)

    def _edit(self, blob: bytearray, other: bytes) -> None:
        r = self.random
        at = r.randint(0, len(blob))
        action = r.randrange(9)
        if action == 0 and blob:  # flip a bit
            i = r.randrange(len(blob))
            blob[i] ^= 1 << r.randrange(8)
        elif action == 1 and blob:  # any byte
            blob[r.randrange(len(blob))] = r.randrange(256)
        elif action in (2, 3):  # a token of the format
            blob[at:at] = r.choice(TOKENS)
        elif action == 4 and blob:  # delete a range
            del blob[at : at + r.randint(1, 16)]
        elif action == 5 and blob:  # repeat a range
            start = r.randrange(len(blob))
            blob[at:at] = blob[start : start + r.randint(1, 64)]
        elif action == 6 and other:  # splice in part of another input
            start = r.randrange(len(other))
            blob[at : at + r.randint(0, 32)] = other[start : start + r.randint(1, 256)]
        elif action == 7:  # cut the end
            del blob[at:]
        else:  # swap a digit, quote or brace for a neighbour in the format
            i = r.randrange(len(blob)) if blob else 0
            if blob:
                blob[i] = r.choice(b'0123456789"{}[]:,\\ ')


# --------------------------------------------------------------------------- oracle


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (so True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class Oracle:
    """Runs a case through the sanitized parser and compares what it accepts with the
    per-line code. Returns None when they agree (or the parser declines), else why not."""

    def __init__(self, parser: Any) -> None:
        from export_pipeline.dynamodb.convert import model, parse_lines, parse_native
        from export_pipeline.dynamodb.convert import values as cv

        self.parser = parser
        self.accepted = 0  # batches the parser accepted and that matched the per-line code
        self.native = parse_native
        self.lines = parse_lines
        self.model = model
        self.cv = cv
        libc = ctypes.CDLL(None)
        self.malloc = libc.malloc
        self.malloc.restype = ctypes.c_void_p
        self.malloc.argtypes = [ctypes.c_size_t]
        self.free = libc.free
        self.free.argtypes = [ctypes.c_void_p]

    def parse(self, case: Case) -> Any:
        """The parser's result for `case`, its blob in a heap block of exactly its size."""
        size = len(case.blob)
        address = self.malloc(size)
        if not address:
            raise MemoryError
        try:
            ctypes.memmove(address, case.blob, size)
            view = (ctypes.c_char * size).from_address(address)
            if case.keys is None:
                return self.parser.parse(view, case.rows)
            return self.parser.parse(view, case.rows, case.keys)
        finally:
            self.free(address)

    def check(self, case: Case) -> str | None:
        parsed = self.parse(case)
        if parsed is None:
            return None
        if case.keys is None:
            columns, deleted, stamp_offsets, stamp_texts = parsed, b"", b"", b""
        else:
            columns, deleted, stamp_offsets, stamp_texts = parsed
        images = self.native._arrays(columns, case.blob, case.rows)
        if images is None:
            return None  # a nested value the per-line code rejects: declined after all
        lines = case.blob.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        if len(lines) != case.rows:
            return f"accepted {case.rows} rows in a batch of {len(lines)} lines"
        expected: dict = {}
        try:
            if case.keys is None:
                self.lines.parse_items(Path("fuzz"), lines, expected, 0, case.rows, 0)
            else:
                self.lines.parse_changes(Path("fuzz"), lines, expected, 0, case.rows, 0, case.keys)
        except Exception as exc:
            return f"accepted a batch the per-line code rejects: {exc}"
        if case.keys is not None:
            got_deleted = self._bools(deleted, case.rows)
            if got_deleted != expected.pop((None, self.model.DELETED_TAG)):
                return f"deleted flags differ: {got_deleted}"
            got_stamps = self._texts(stamp_offsets, stamp_texts, case.rows)
            want_stamps = expected.pop((None, self.model.TIMESTAMP_TAG))
            if not _same(got_stamps, want_stamps):
                return f"timestamps differ: {got_stamps!r} != {want_stamps!r}"
        if set(images) != set(expected):
            return f"columns differ: {sorted(images)} != {sorted(expected)}"
        for (attribute, tag), array in images.items():
            for row, (got, want) in enumerate(
                zip(array.to_pylist(), expected[(attribute, tag)], strict=True)
            ):
                if not self._agrees(tag, got, want):
                    return f"row {row}, {attribute!r} {tag}: {got!r} != per-line {want!r}"
        self.accepted += 1
        return None

    def _agrees(self, tag: str, got: Any, want: Any) -> bool:
        if want is None:
            return got is None
        if tag == "NULL":  # only presence counts (the column holds no values)
            return got is not None
        try:
            if tag == "B":
                want = self.cv.decode_base64_list([want])[0]
            elif tag == "BS":
                want = self.cv.decode_base64_list(want)
        except Exception:
            return False  # per-line would report it; the parser had to decline
        return _same(got, want)

    @staticmethod
    def _bools(bitmap: bytes, rows: int) -> list[bool]:
        return [bool(bitmap[i >> 3] >> (i & 7) & 1) for i in range(rows)]

    @staticmethod
    def _texts(offsets: bytes, data: bytes, rows: int) -> list[str]:
        ends = memoryview(offsets).cast("i")
        return [bytes(data[ends[i] : ends[i + 1]]).decode() for i in range(rows)]


# --------------------------------------------------------------------------- the child


def _load_parser(path: Path) -> Any:
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.ExtensionFileLoader("_items", str(path))
    spec = importlib.util.spec_from_file_location("_items", str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Coverage:
    """The edge map of coverage.c, bucketed AFL-style (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+)."""

    def __init__(self, library: Path) -> None:
        import numpy as np

        self.np = np
        shim = ctypes.CDLL(str(library))
        shim.fuzz_coverage_map.restype = ctypes.c_void_p
        shim.fuzz_coverage_size.restype = ctypes.c_size_t
        size = shim.fuzz_coverage_size()
        raw = (ctypes.c_uint8 * size).from_address(shim.fuzz_coverage_map())
        self.map = np.frombuffer(raw, dtype=np.uint8)
        self.reset = shim.fuzz_coverage_reset
        lut = np.zeros(256, dtype=np.uint8)
        for low, high, bit in ((1, 1, 1), (2, 2, 2), (3, 3, 4), (4, 7, 8), (8, 15, 16)):
            lut[low : high + 1] = bit
        lut[16:32], lut[32:128], lut[128:] = 32, 64, 128
        self.lut = lut
        self.seen = np.zeros(size, dtype=np.uint8)

    def new_edges(self) -> bool:
        """Whether the last run reached an edge or hit count not seen before (and remember it)."""
        buckets = self.lut[self.map]
        fresh = buckets & ~self.seen
        if not fresh.any():
            return False
        self.seen |= buckets
        return True

    def edges(self) -> int:
        return int(self.np.count_nonzero(self.seen))


def child_main(args: argparse.Namespace) -> int:
    parser = _load_parser(Path(args.child))
    oracle = Oracle(parser)
    coverage = Coverage(Path(args.child))
    with open(args.last_input, "r+b") as handle:
        last = mmap.mmap(handle.fileno(), LAST_INPUT_BYTES)

    def run(case: Case) -> str | None:
        data = case.encode()[: LAST_INPUT_BYTES - 4]
        last[:4] = len(data).to_bytes(4, "little")
        last[4 : 4 + len(data)] = data
        coverage.reset()
        return oracle.check(case)

    if args.replay:
        case = Case.decode(Path(args.replay).read_bytes())
        problem = run(case)
        print(f"replayed {args.replay}: {problem or 'no difference, no sanitizer error'}")
        return FINDING if problem else 0

    corpus_dir = Path(args.corpus) if args.corpus else None
    corpus = seed_cases()
    if corpus_dir and corpus_dir.is_dir():
        corpus += [Case.decode(p.read_bytes()) for p in sorted(corpus_dir.glob("*.case"))]
    mutator = Mutator(args.seed)
    deadline = time.monotonic() + args.seconds
    execs, started, report_at = 0, time.monotonic(), time.monotonic() + 10
    found = None
    for case in list(corpus):  # the seeds themselves must pass
        execs += 1
        problem = run(case)
        coverage.new_edges()
        if problem:
            found = (case, problem)
            break
    while found is None and time.monotonic() < deadline:
        case = mutator.next_case(corpus)
        execs += 1
        problem = run(case)
        if problem:
            found = (case, problem)
            break
        if coverage.new_edges():
            corpus.append(case)
            if corpus_dir:
                corpus_dir.mkdir(parents=True, exist_ok=True)
                name = hashlib.sha1(case.encode()).hexdigest()[:16]
                (corpus_dir / f"{name}.case").write_bytes(case.encode())
        if time.monotonic() > report_at:
            report_at += 10
            rate = execs / (time.monotonic() - started)
            print(
                f"  {execs} runs ({rate:.0f}/s), {oracle.accepted} accepted, "
                f"corpus {len(corpus)}, edges {coverage.edges()}"
            )
    elapsed = time.monotonic() - started
    print(
        f"fuzzed {execs} batches in {elapsed:.1f} s ({execs / elapsed:.0f}/s); "
        f"{oracle.accepted} accepted, each equal to the per-line code's result; "
        f"corpus {len(corpus)}, edges {coverage.edges()}"
    )
    if found:
        case, problem = found
        path = _save_finding(Path(args.findings), "difference", case.encode())
        print(f"FOUND: the parser differs from the per-line code: {problem}\n  input: {path}")
        return FINDING
    return 0


def _save_finding(folder: Path, kind: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{hashlib.sha1(data).hexdigest()[:16]}.case"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- the parent


def build(folder: Path) -> Path:
    """The sanitized, coverage-instrumented parser as an extension module in `folder`."""
    compiler = os.environ.get("CC", "gcc")
    include = sysconfig.get_paths()["include"]
    parser_object, coverage_object = folder / "_items.o", folder / "coverage.o"
    library = folder / f"_items{sysconfig.get_config_var('EXT_SUFFIX')}"
    instrumented = [*CFLAGS, "-fsanitize-coverage=trace-pc", f"-I{include}"]
    steps = [
        [compiler, *instrumented, "-c", str(PARSER_SOURCE), "-o", str(parser_object)],
        [compiler, *CFLAGS, "-c", str(COVERAGE_SOURCE), "-o", str(coverage_object)],
        [
            compiler,
            "-shared",
            *SANITIZE,
            str(parser_object),
            str(coverage_object),
            "-o",
            str(library),
        ],
    ]
    for step in steps:
        subprocess.run(step, check=True)
    return library


def sanitizer_environment(compiler: str = "gcc") -> dict[str, str]:
    """The environment of a child that runs the sanitized build inside a normal Python."""
    runtime = subprocess.run(
        [os.environ.get("CC", compiler), "-print-file-name=libasan.so"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not Path(runtime).exists():
        raise SystemExit(f"no AddressSanitizer runtime ({runtime}): install gcc's libasan")
    return {
        **os.environ,
        "LD_PRELOAD": runtime,
        # Python frees nothing at exit; leaks are not what this looks for.
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
        "PYTHONMALLOC": "malloc",
        "EXPORT_PIPELINE_NATIVE_PARSER": "0",  # the child never loads the unsanitized build
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]),
    }


def check_sanitizers(library: Path, environment: dict[str, str]) -> None:
    """Fail unless both probes of coverage.c die with their sanitizer's report."""
    for probe, report in (
        ("fuzz_probe_asan()", "heap-buffer-overflow"),
        ("fuzz_probe_ubsan(1)", "runtime error"),
    ):
        code = f"import ctypes; ctypes.CDLL({str(library)!r}).{probe}"
        result = subprocess.run(
            [sys.executable, "-c", code], env=environment, capture_output=True, text=True
        )
        if result.returncode == 0 or report not in result.stderr:
            sys.stderr.write(result.stderr)
            raise SystemExit(f"sanitizer probe {probe} was not caught: the build is not checked")
    print("sanitizers live: AddressSanitizer and UBSan both stopped their probes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="fuzzing time (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="mutation seed (default 0)")
    parser.add_argument("--corpus", help="folder to read and extend with new-coverage inputs")
    parser.add_argument("--findings", default="native-fuzz-findings", help="where findings go")
    parser.add_argument("--replay", help="run one saved input (a findings or corpus file)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--last-input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="native-fuzz-") as work:
        folder = Path(work)
        library = build(folder)
        print(f"built {PARSER_SOURCE.name} with ASan, UBSan and edge coverage")
        environment = sanitizer_environment()
        check_sanitizers(library, environment)
        last_input = folder / "last-input"
        last_input.write_bytes(b"\0" * LAST_INPUT_BYTES)
        command = [
            sys.executable,
            "-m",
            "export_pipeline_tests.fuzz.native_parser",
            "--child",
            str(library),
            "--last-input",
            str(last_input),
            "--seconds",
            str(args.seconds),
            "--seed",
            str(args.seed),
            "--findings",
            str(Path(args.findings).resolve()),
        ]
        if args.corpus:
            command += ["--corpus", str(Path(args.corpus).resolve())]
        if args.replay:
            command += ["--replay", str(Path(args.replay).resolve())]
        code = subprocess.run(command, env=environment).returncode
        if code not in (0, FINDING):  # a sanitizer stopped the child: keep its input
            data = last_input.read_bytes()
            size = int.from_bytes(data[:4], "little")
            path = _save_finding(Path(args.findings), "crash", data[4 : 4 + size])
            print(f"FOUND: the child stopped with exit code {code} (report above)\n  input: {path}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
