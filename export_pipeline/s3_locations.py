"""Where in S3 the pipeline may read exports: its own prefixes and configured extra ones.

A team that already exports with its own tooling (a scheduled Lambda, the
console) has exports outside the pipeline's prefixes (bucket root,
`2020-Nov/…`). The pipeline may load them, but only from locations the
configuration lists (`aws.readable_s3_locations`), because those are the
locations the rendered IAM policy lets it read (`export_pipeline.iam_policies`):
a location outside them would be denied on AWS, so it is refused here first,
before any request, with the setting that would allow it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from export_pipeline.errors import PermanentError

_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()\-/]*$")
SETTING = "aws.readable_s3_locations"


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix ("" for the whole bucket), without slashes at either end."""

    bucket: str
    prefix: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def holds(self, bucket: str, prefix: str) -> bool:
        """Whether everything under `bucket`/`prefix` lies inside this location."""
        prefix = prefix.strip("/")
        if bucket != self.bucket:
            return False
        return not self.prefix or prefix == self.prefix or prefix.startswith(self.prefix + "/")


def parse_s3_location(text: str) -> S3Location:
    """`s3://bucket` or `s3://bucket/prefix` -> S3Location; ValueError saying what is wrong."""
    match = _URI.fullmatch(text.strip())
    if not match or ".." in match["bucket"]:
        raise ValueError(f"expected 's3://<bucket>' or 's3://<bucket>/<prefix>', got {text!r}")
    prefix = (match["prefix"] or "").strip("/")
    if not _PREFIX.fullmatch(prefix) or ".." in prefix.split("/"):
        raise ValueError(f"{text!r}: expected a key prefix of letters, digits and !_.*'()-/ only")
    return S3Location(match["bucket"], prefix)


class UnreadableLocationError(PermanentError):
    """An export lies outside every location the pipeline may read."""

    hint = f"add its location to {SETTING} in pipeline.yaml and re-render the IAM policy"


def check_readable(what: str, bucket: str, prefix: str, readable: Iterable[S3Location]) -> None:
    """Raise UnreadableLocationError unless `bucket`/`prefix` lies inside a readable location."""
    readable = list(readable)
    if any(location.holds(bucket, prefix) for location in readable):
        return
    wanted = S3Location(bucket, prefix.strip("/"))
    raise UnreadableLocationError(
        f"{what} is at {wanted.uri}, outside the locations the pipeline may read "
        f"({', '.join(location.uri for location in readable)}): add '{wanted.uri}' to "
        f"{SETTING} in pipeline.yaml, and re-render the IAM policy "
        "(python -m export_pipeline.iam_policies pipeline-policy) so that AWS allows it too"
    )
