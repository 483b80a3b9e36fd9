"""Deterministic generators of DynamoDB export data files for the benchmark.

Items of 11 attributes covering every type a table holds in practice: S, N
(integers, decimals), BOOL, NULL, B, SS, NS, BS, and M with a nested L; as a
full export (`{"Item": ...}` lines) or as an incremental export's change
lines (10% deletes, half of the updates with an OldImage, as an export with
NEW_AND_OLD_IMAGES writes them). The same seed always writes the same
bytes, so runs are comparable.
"""

from __future__ import annotations

import base64
import gzip
import random
from pathlib import Path

import orjson

_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def _item(rng: random.Random, index: int) -> dict:
    blob = base64.b64encode(rng.randbytes(rng.randint(1, 24))).decode("ascii")
    item = {
        "pk": {"S": f"user#{index:09d}"},
        "sk": {"S": f"order#{rng.randint(0, 10**6):07d}"},
        "amount": {"N": f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}"},
        "quantity": {"N": str(rng.randint(-(10**9), 10**9))},
        "active": {"BOOL": rng.random() < 0.5},
        "tags": {"SS": rng.sample(_WORDS, rng.randint(1, 4))},
        "payload": {"B": blob},
        "deleted_at": {"NULL": True},
        "scores": {"NS": [str(rng.randint(0, 1000)) for _ in range(rng.randint(1, 3))]},
        "address": {
            "M": {
                "city": {"S": rng.choice(_WORDS).title()},
                "zip": {"N": str(rng.randint(10000, 99999))},
                "lines": {"L": [{"S": "street " + str(rng.randint(1, 999))}, {"N": "1.5"}]},
            }
        },
        "note": {"S": "café ☕ " + rng.choice(_WORDS)},
    }
    return {"Item": item}


def _change(rng: random.Random, index: int) -> dict:
    item = _item(rng, index)["Item"]
    change = {
        "Metadata": {"WriteTimestampMicros": {"N": str(1_764_115_200_000_000 + index)}},
        "Keys": {"pk": item["pk"]},
    }
    draw = rng.random()
    if draw >= 0.1:  # else a delete: Keys only
        change["NewImage"] = item
        if draw >= 0.55:
            change["OldImage"] = _item(rng, index)["Item"]
    return change


def write_export_file(
    path: Path, items: int, *, seed: int = 20251126, incremental: bool = False
) -> Path:
    """Write `items` items (or change lines) as one gzip DynamoDB JSON data file at `path`."""
    rng = random.Random(seed)
    make = _change if incremental else _item
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=6) as out:
        chunk: list[bytes] = []
        for index in range(items):
            chunk.append(orjson.dumps(make(rng, index)))
            if len(chunk) == 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk = []
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    return path
