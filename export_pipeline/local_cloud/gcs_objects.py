"""The objects of the local GCS server: buckets as folders, objects as plain files.

Object `name` of bucket `b` is the file `<state>/gcs/b/name` (the folder
bqemulator resolves `gs://b/name` under); its metadata (generation, content
type, MD5, CRC32C) is a JSON file in `<state>/gcs-metadata/`; uploads in
progress are files in `<state>/gcs-uploads/`, renamed into place (atomically)
only when complete, so a half-sent object is never visible. `gcs_server`
serves these over Google's JSON API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import google_crc32c

from export_pipeline.local_cloud.settings import gcs_root

COPY_CHUNK_BYTES = 1 << 20
# GCS's bucket naming rules (the dotted, domain-named form aside).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]")


class GcsError(Exception):
    """An error answer of the JSON API: HTTP status, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def body(self) -> bytes:
        error = {"code": self.status, "message": self.message}
        return json.dumps(
            {"error": {**error, "errors": [{**error, "reason": self.reason, "domain": "global"}]}}
        ).encode()


def _rfc3339(epoch_ns: int) -> str:
    return datetime.fromtimestamp(epoch_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Digest:
    """MD5 and CRC32C of a byte stream, computed as it is written."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self.crc32c = google_crc32c.Checksum()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.crc32c.update(data)
        self.size += len(data)

    def fields(self) -> dict[str, str]:
        return {
            "md5Hash": base64.b64encode(self.md5.digest()).decode(),
            "crc32c": base64.b64encode(self.crc32c.digest()).decode(),
            "size": str(self.size),
        }


class ObjectStore:
    """Buckets as folders of `root`, objects as plain files, metadata beside them."""

    def __init__(self, state_dir: Path) -> None:
        self.root = gcs_root(state_dir)
        self.metadata_root = state_dir / "gcs-metadata"
        self.uploads = state_dir / "gcs-uploads"
        for folder in (self.root, self.metadata_root, self.uploads):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time per final rename

    # -- names ---------------------------------------------------------------

    def bucket_path(self, bucket: str) -> Path:
        if not _BUCKET_NAME.fullmatch(bucket):
            raise GcsError(400, "invalid", f"invalid bucket name: {bucket!r}")
        return self.root / bucket

    def object_path(self, bucket: str, name: str) -> Path:
        parts = name.split("/")
        if not name or any(part in ("", ".", "..") for part in parts) or "\0" in name:
            # A name such as "a//b", "a/" or "../x" has no plain-file form.
            raise GcsError(
                400,
                "invalid",
                f"object name {name!r} cannot be stored by the local cloud (empty, '.' or "
                "'..' path segments are not supported; see docs/local-cloud.md)",
            )
        return self.bucket_path(bucket).joinpath(*parts)

    def _metadata_path(self, bucket: str, name: str) -> Path:
        return self.metadata_root / bucket / (quote(name, safe="") + ".json")

    def require_bucket(self, bucket: str) -> Path:
        path = self.bucket_path(bucket)
        if not path.is_dir():
            raise GcsError(404, "notFound", f"The specified bucket does not exist: {bucket}")
        return path

    # -- buckets ---------------------------------------------------------------

    def bucket_resource(self, bucket: str) -> dict[str, Any]:
        path = self.require_bucket(bucket)
        created = _rfc3339(path.stat().st_mtime_ns)
        return {
            "kind": "storage#bucket",
            "id": bucket,
            "name": bucket,
            "location": "US",
            "storageClass": "STANDARD",
            "metageneration": "1",
            "timeCreated": created,
            "updated": created,
        }

    def insert_bucket(self, bucket: str) -> dict[str, Any]:
        path = self.bucket_path(bucket)
        try:
            path.mkdir()
        except FileExistsError:
            raise GcsError(
                409,
                "conflict",
                f"Your previous request to create the named bucket succeeded "
                f"and you already own it: {bucket}",
            ) from None
        return self.bucket_resource(bucket)

    def list_buckets(self) -> list[dict[str, Any]]:
        return [self.bucket_resource(p.name) for p in sorted(self.root.iterdir()) if p.is_dir()]

    def delete_bucket(self, bucket: str) -> None:
        path = self.require_bucket(bucket)
        if any(path.iterdir()):
            raise GcsError(409, "conflict", f"The bucket to delete is not empty: {bucket}")
        path.rmdir()
        shutil.rmtree(self.metadata_root / bucket, ignore_errors=True)

    # -- objects ---------------------------------------------------------------

    def object_resource(self, bucket: str, name: str) -> dict[str, Any]:
        """The object's resource; 404 if there is none.

        The stored metadata is trusted only while the file has the size and
        modification time it had when the metadata was written; a file put
        there by another writer (bqemulator's extract jobs write under the
        same root) gets its checksums computed here.
        """
        self.require_bucket(bucket)
        path = self.object_path(bucket, name)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise GcsError(404, "notFound", f"No such object: {bucket}/{name}") from None
        if not path.is_file():
            raise GcsError(404, "notFound", f"No such object: {bucket}/{name}")
        try:
            stored = json.loads(self._metadata_path(bucket, name).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            stored = {}
        if (stored.get("_size"), stored.get("_mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
            digest = Digest()
            with open(path, "rb") as handle:
                while chunk := handle.read(COPY_CHUNK_BYTES):
                    digest.update(chunk)
            stored = {
                **digest.fields(),
                "generation": str(stat.st_mtime_ns // 1000),
                "contentType": "application/octet-stream",
                "timeCreated": _rfc3339(stat.st_mtime_ns),
            }
        return self._resource(bucket, name, stored)

    @staticmethod
    def _resource(bucket: str, name: str, stored: dict[str, Any]) -> dict[str, Any]:
        generation = stored["generation"]
        quoted = quote(name, safe="")
        resource = {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{generation}",
            "selfLink": f"/storage/v1/b/{bucket}/o/{quoted}",
            "mediaLink": f"/download/storage/v1/b/{bucket}/o/{quoted}?generation={generation}"
            "&alt=media",
            "name": name,
            "bucket": bucket,
            "generation": generation,
            "metageneration": "1",
            "contentType": stored.get("contentType") or "application/octet-stream",
            "storageClass": "STANDARD",
            "size": stored["size"],
            "md5Hash": stored["md5Hash"],
            "crc32c": stored["crc32c"],
            "etag": base64.b64encode(generation.encode()).decode(),
            "timeCreated": stored["timeCreated"],
            "updated": stored["timeCreated"],
        }
        if stored.get("metadata"):
            resource["metadata"] = stored["metadata"]
        return resource

    def _current_generation(self, bucket: str, name: str) -> str | None:
        try:
            return self.object_resource(bucket, name)["generation"]
        except GcsError as exc:
            if exc.status == 404:
                return None
            raise

    def check_preconditions(self, bucket: str, name: str, query: dict[str, str]) -> None:
        """`ifGenerationMatch` (0: no live object) and `ifGenerationNotMatch`; 412 if unmet."""
        match, not_match = query.get("ifGenerationMatch"), query.get("ifGenerationNotMatch")
        if match is None and not_match is None:
            return
        current = self._current_generation(bucket, name) or "0"
        if (match is not None and match != current) or (
            not_match is not None and not_match == current
        ):
            raise GcsError(
                412,
                "conditionNotMet",
                "At least one of the pre-conditions you specified did not hold.",
            )

    def new_upload_file(self) -> Path:
        return self.uploads / f"{uuid.uuid4().hex}.part"

    def finalize(
        self,
        bucket: str,
        name: str,
        data_path: Path,
        digest: Digest,
        *,
        content_type: str | None,
        metadata: dict[str, str] | None,
        query: dict[str, str],
    ) -> dict[str, Any]:
        """Make the fully received `data_path` object `name` (atomically) and describe it."""
        target = self.object_path(bucket, name)
        with self._lock:
            self.require_bucket(bucket)
            self.check_preconditions(bucket, name, query)
            target.parent.mkdir(parents=True, exist_ok=True)
            stat = data_path.stat()
            now_ns = time.time_ns()
            stored = {
                **digest.fields(),
                "generation": str(now_ns // 1000),
                "contentType": content_type,
                "timeCreated": _rfc3339(now_ns),
                "metadata": metadata or {},
                "_size": stat.st_size,
                "_mtime_ns": stat.st_mtime_ns,
            }
            metadata_path = self._metadata_path(bucket, name)
            metadata_path.parent.mkdir(parents=True, exist_ok=True)
            metadata_tmp = metadata_path.with_suffix(".tmp")
            metadata_tmp.write_text(json.dumps(stored), encoding="utf-8")
            os.replace(data_path, target)
            os.replace(metadata_tmp, metadata_path)
        return self._resource(bucket, name, stored)

    def delete_object(self, bucket: str, name: str, query: dict[str, str]) -> None:
        with self._lock:
            self.object_resource(bucket, name)  # 404 if absent
            self.check_preconditions(bucket, name, query)
            path = self.object_path(bucket, name)
            path.unlink()
            self._metadata_path(bucket, name).unlink(missing_ok=True)
            bucket_path = self.bucket_path(bucket)
            # Folders exist only to hold names: drop the ones this left empty.
            parent = path.parent
            while parent != bucket_path:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def names(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every object name under `prefix`, in lexicographic (GCS listing) order."""
        bucket_path = self.require_bucket(bucket)
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = bucket_path.joinpath(*folder.split("/")) if folder else bucket_path
        if not start.is_dir():
            return iter(())
        found = []
        for directory, _dirs, files in os.walk(start):
            relative = os.path.relpath(directory, bucket_path)
            for file in files:
                name = file if relative == "." else f"{relative}/{file}".replace(os.sep, "/")
                if name.startswith(prefix):
                    found.append(name)
        return iter(sorted(found))
