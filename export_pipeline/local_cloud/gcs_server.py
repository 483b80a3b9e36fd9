"""The Google Cloud Storage part of the local cloud: a small GCS JSON API server.

Run as `python -m export_pipeline.local_cloud.gcs_server --host H --port P --state-dir D`
(`control.up` does). It stores object `name` of bucket `b` as the plain file
`D/gcs/b/name` (`gcs_objects.ObjectStore`), which is where bqemulator
(started with the same root as its `BQEMU_GCS_LOCAL_ROOT`) resolves
`gs://b/name` when a load job reads it. An object appears there only when its
upload completed, by an atomic rename, as a GCS object appears only when its
upload is finalized.

What it implements, as Google documents the JSON API
(https://cloud.google.com/storage/docs/json_api/v1): buckets get, insert,
list and delete; objects insert by `uploadType=media`, `multipart` and
`resumable` (chunks with `Content-Range`, the 308 "Resume Incomplete" answer
with `Range`, status queries, cancel), get (metadata, and the bytes with
`alt=media`, with `Range`), list (`prefix`, `delimiter`, `maxResults`,
`pageToken`) and delete, with `ifGenerationMatch`/`ifGenerationNotMatch`
preconditions. `size` and `generation` are decimal strings, `md5Hash` and
`crc32c` the base64 of the big-endian digest, and downloads carry
`x-goog-hash`, so the official client's checksum checks run as against Google.
Everything else (ACLs, versioning, lifecycle, compose, rewrite) is absent;
docs/local-cloud.md lists the differences. `GET /_local_cloud/health`
answers with the pid, like the AWS server's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from export_pipeline.local_cloud._process import serve_until_stopped
from export_pipeline.local_cloud.gcs_objects import COPY_CHUNK_BYTES, Digest, GcsError, ObjectStore

HEALTH_PATH = "/_local_cloud/health"

_log = logging.getLogger("export_pipeline.local_cloud.gcs_server")


class _Handler(BaseHTTPRequestHandler):
    server_version = "export-pipeline-local-gcs"
    protocol_version = "HTTP/1.1"
    store: ObjectStore  # set on the subclass `serve` builds

    # -- plumbing ------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        _log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _base_url(self) -> str:
        address = self.server.server_address
        return "http://" + (self.headers.get("Host") or f"{address[0]}:{address[1]}")

    def _absolute_links(self, document: Any) -> Any:
        """Object resources' selfLink and mediaLink as absolute URLs of this server."""
        if isinstance(document, dict):
            if document.get("kind") == "storage#object":
                base = self._base_url()
                return {
                    **document,
                    "selfLink": base + document["selfLink"],
                    "mediaLink": base + document["mediaLink"],
                }
            if "items" in document:
                return {**document, "items": [self._absolute_links(i) for i in document["items"]]}
        return document

    def _send_json(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        document = self._absolute_links(document)
        self._send(
            status,
            json.dumps(document).encode(),
            {"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
        )

    def _body_length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

    def _read_body(self) -> bytes:
        return self.rfile.read(self._body_length())

    def _drain(self) -> None:
        remaining = self._body_length()
        while remaining > 0:
            remaining -= len(self.rfile.read(min(remaining, COPY_CHUNK_BYTES)))

    def _route(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            self._dispatch(split.path, query)
        except GcsError as exc:
            self._drain_quietly()
            self._send(exc.status, exc.body(), {"Content-Type": "application/json"})
        except Exception as exc:  # an unexpected failure is a 500, logged with its traceback
            _log.exception("%s %s failed", self.command, split.path)
            self._drain_quietly()
            self._send(500, GcsError(500, "backendError", str(exc)).body())

    def _drain_quietly(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if not getattr(self, "_body_consumed", False):
                self._drain()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _route

    def _dispatch(self, path: str, query: dict[str, str]) -> None:
        self._body_consumed = False
        if path == HEALTH_PATH:
            self._send_json(200, {"status": "ok", "pid": os.getpid(), "root": str(self.store.root)})
            return
        for base, kind in (
            ("/upload/storage/v1/b/", "upload"),
            ("/download/storage/v1/b/", "download"),
            ("/storage/v1/b/", "json"),
        ):
            if path.startswith(base):
                self._dispatch_bucket_path(kind, path[len(base) :], query)
                return
        if path in ("/storage/v1/b", "/storage/v1/b/"):
            self._buckets_collection(query)
            return
        raise GcsError(404, "notFound", f"Not Found: {self.command} {path}")

    def _buckets_collection(self, query: dict[str, str]) -> None:
        if self.command == "GET":
            self._send_json(200, {"kind": "storage#buckets", "items": self.store.list_buckets()})
        elif self.command == "POST":
            document = json.loads(self._read_body() or b"{}")
            self._body_consumed = True
            name = document.get("name")
            if not name:
                raise GcsError(400, "required", "Required: bucket name")
            self._send_json(200, self.store.insert_bucket(name))
        else:
            raise GcsError(405, "methodNotAllowed", f"{self.command} not allowed on buckets")

    def _dispatch_bucket_path(self, kind: str, rest: str, query: dict[str, str]) -> None:
        bucket, _, tail = rest.partition("/")
        bucket = unquote(bucket)
        if kind == "upload":
            if tail != "o":
                raise GcsError(404, "notFound", f"Not Found: {self.path}")
            self._upload(bucket, query)
            return
        if not tail:
            self._bucket(bucket)
        elif tail == "o":
            self._list_objects(bucket, query)
        elif tail.startswith("o/"):
            self._object(bucket, unquote(tail[2:]), query, download=kind == "download")
        else:
            raise GcsError(404, "notFound", f"Not Found: {self.path}")

    # -- buckets -------------------------------------------------------------

    def _bucket(self, bucket: str) -> None:
        if self.command in ("GET", "HEAD"):
            self._send_json(200, self.store.bucket_resource(bucket))
        elif self.command == "DELETE":
            self.store.delete_bucket(bucket)
            self._send(204)
        else:
            raise GcsError(405, "methodNotAllowed", f"{self.command} not allowed on a bucket")

    # -- objects -------------------------------------------------------------

    def _list_objects(self, bucket: str, query: dict[str, str]) -> None:
        if self.command != "GET":
            raise GcsError(405, "methodNotAllowed", f"{self.command} not allowed on objects")
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter") or None
        max_results = int(query.get("maxResults") or 1000)
        page_token = query.get("pageToken") or ""
        items: list[dict[str, Any]] = []
        prefixes: list[str] = []
        next_token = None
        last_listed = ""  # the page token: every name up to it is on this page or before
        for name in self.store.names(bucket, prefix):
            if page_token and name <= page_token:
                continue
            rolled = None
            if delimiter and delimiter in name[len(prefix) :]:
                rolled = name[: name.index(delimiter, len(prefix)) + len(delimiter)]
                if prefixes and prefixes[-1] == rolled:
                    last_listed = name
                    continue
            if len(items) + len(prefixes) >= max_results:
                next_token = last_listed
                break
            if rolled is not None:
                prefixes.append(rolled)
            else:
                with contextlib.suppress(GcsError):  # deleted meanwhile: not listed
                    items.append(self.store.object_resource(bucket, name))
            last_listed = name
        document: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if prefixes:
            document["prefixes"] = prefixes
        if next_token is not None:
            document["nextPageToken"] = next_token
        self._send_json(200, document)

    def _object(self, bucket: str, name: str, query: dict[str, str], *, download: bool) -> None:
        if self.command == "DELETE":
            self.store.delete_object(bucket, name, query)
            self._send(204)
            return
        if self.command not in ("GET", "HEAD"):
            raise GcsError(405, "methodNotAllowed", f"{self.command} not allowed on an object")
        resource = self.store.object_resource(bucket, name)
        self.store.check_preconditions(bucket, name, query)
        wanted = query.get("generation")
        if wanted and wanted != resource["generation"]:
            raise GcsError(404, "notFound", f"No such object: {bucket}/{name}#{wanted}")
        if download or query.get("alt") == "media":
            self._send_media(bucket, name, resource)
        else:
            self._send_json(200, resource)

    def _send_media(self, bucket: str, name: str, resource: dict[str, Any]) -> None:
        size = int(resource["size"])
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header and size:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
            if not match or (not match.group(1) and not match.group(2)):
                raise GcsError(416, "requestedRangeNotSatisfiable", f"bad Range {header!r}")
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(0, size - int(match.group(2)))
            if start >= size or start > end:
                raise GcsError(416, "requestedRangeNotSatisfiable", f"Range {header!r} of {size}")
            status = 206
        headers = {
            "Content-Type": resource["contentType"],
            "x-goog-generation": resource["generation"],
            "x-goog-stored-content-length": resource["size"],
            "x-goog-hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}",
            "ETag": resource["etag"],
        }
        length = end - start + 1 if size else 0
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD" or not length:
            return
        with open(self.store.object_path(bucket, name), "rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(remaining, COPY_CHUNK_BYTES))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- uploads -------------------------------------------------------------

    def _upload(self, bucket: str, query: dict[str, str]) -> None:
        upload_type = query.get("uploadType", "")
        if "upload_id" in query:
            self._resumable_chunk(bucket, query)
        elif self.command != "POST":
            raise GcsError(405, "methodNotAllowed", f"{self.command} not allowed on uploads")
        elif upload_type == "media":
            name = query.get("name") or ""
            if not name:
                raise GcsError(400, "required", "Required: object name (the name parameter)")
            self._receive_whole(bucket, name, self.headers.get("Content-Type"), None, query)
        elif upload_type == "multipart":
            self._multipart(bucket, query)
        elif upload_type == "resumable":
            self._start_resumable(bucket, query)
        else:
            raise GcsError(400, "invalid", f"unsupported uploadType {upload_type!r}")

    def _receive_whole(
        self,
        bucket: str,
        name: str,
        content_type: str | None,
        metadata: dict[str, str] | None,
        query: dict[str, str],
    ) -> None:
        self.store.require_bucket(bucket)
        self.store.object_path(bucket, name)
        part = self.store.new_upload_file()
        digest = Digest()
        try:
            with open(part, "wb") as handle:
                remaining = self._body_length()
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, COPY_CHUNK_BYTES))
                    if not chunk:
                        raise GcsError(400, "invalid", "the request body ended early")
                    handle.write(chunk)
                    digest.update(chunk)
                    remaining -= len(chunk)
            self._body_consumed = True
            resource = self.store.finalize(
                bucket,
                name,
                part,
                digest,
                content_type=content_type,
                metadata=metadata,
                query=query,
            )
        finally:
            part.unlink(missing_ok=True)
        self._send_json(200, resource)

    def _multipart(self, bucket: str, query: dict[str, str]) -> None:
        content_type = self.headers.get("Content-Type", "")
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        if not match:
            raise GcsError(400, "invalid", "multipart upload without a boundary")
        body = self._read_body()  # multipart uploads carry small objects (the client's rule)
        self._body_consumed = True
        delimiter = b"--" + match.group(1).encode()
        parts = [p for p in body.split(delimiter)[1:] if not p.startswith(b"--")]
        if len(parts) != 2:
            raise GcsError(400, "invalid", "multipart upload needs metadata and media parts")
        documents = []
        for part in parts:
            head, _, data = part.partition(b"\r\n\r\n")
            headers = dict(
                line.split(":", 1) for line in head.decode().strip().splitlines() if ":" in line
            )
            documents.append(({k.lower(): v.strip() for k, v in headers.items()}, data[:-2]))
        (_, metadata_bytes), (media_headers, media) = documents
        resource = json.loads(metadata_bytes)
        name = resource.get("name") or query.get("name") or ""
        if not name:
            raise GcsError(400, "required", "Required: object name")
        self.store.require_bucket(bucket)
        self.store.object_path(bucket, name)
        part_path = self.store.new_upload_file()
        digest = Digest()
        digest.update(media)
        try:
            part_path.write_bytes(media)
            self._verify_client_hashes(resource, digest)
            result = self.store.finalize(
                bucket,
                name,
                part_path,
                digest,
                content_type=resource.get("contentType") or media_headers.get("content-type"),
                metadata=resource.get("metadata"),
                query=query,
            )
        finally:
            part_path.unlink(missing_ok=True)
        self._send_json(200, result)

    @staticmethod
    def _verify_client_hashes(resource: dict[str, Any], digest: Digest) -> None:
        """A client-sent md5Hash/crc32c that disagrees with the bytes fails the upload (400)."""
        fields = digest.fields()
        for key in ("md5Hash", "crc32c"):
            if resource.get(key) and resource[key] != fields[key]:
                raise GcsError(
                    400,
                    "invalid",
                    f"Provided {key} {resource[key]!r} doesn't match calculated "
                    f"{key} {fields[key]!r}.",
                )

    def _session_path(self, upload_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id):
            raise GcsError(404, "notFound", f"No such upload session: {upload_id}")
        return self.store.uploads / f"{upload_id}.json"

    def _start_resumable(self, bucket: str, query: dict[str, str]) -> None:
        raw = self._read_body()
        self._body_consumed = True
        resource = json.loads(raw) if raw.strip() else {}
        name = resource.get("name") or query.get("name") or ""
        if not name:
            raise GcsError(400, "required", "Required: object name")
        self.store.require_bucket(bucket)
        self.store.object_path(bucket, name)
        upload_id = uuid.uuid4().hex
        session = {
            "bucket": bucket,
            "name": name,
            "resource": resource,
            "content_type": self.headers.get("X-Upload-Content-Type")
            or resource.get("contentType"),
            "query": {k: v for k, v in query.items() if k.startswith("ifGeneration")},
        }
        self._session_path(upload_id).write_text(json.dumps(session), encoding="utf-8")
        (self.store.uploads / f"{upload_id}.part").touch()
        location = (
            f"{self._base_url()}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
            f"?uploadType=resumable&upload_id={upload_id}"
        )
        self._send(200, b"", {"Location": location, "X-GUploader-UploadID": upload_id})

    def _resumable_chunk(self, bucket: str, query: dict[str, str]) -> None:
        upload_id = query["upload_id"]
        session_path = self._session_path(upload_id)
        part = self.store.uploads / f"{upload_id}.part"
        try:
            session = json.loads(session_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GcsError(404, "notFound", f"No such upload session: {upload_id}") from None
        if self.command == "DELETE":
            session_path.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
            self._send(499)  # Google answers a cancelled session with 499
            return
        if self.command != "PUT":
            raise GcsError(405, "methodNotAllowed", f"{self.command} not allowed on a session")
        if "finished" in session:
            # The upload completed; a client that lost that answer asks again and
            # gets the object, as from Google.
            self._drain()
            self._body_consumed = True
            self._send_json(200, session["finished"])
            return
        received = part.stat().st_size
        content_range = (self.headers.get("Content-Range") or "").strip()
        length = self._body_length()
        total: int | None
        first: int | None
        if not content_range:
            first, total = 0, length  # the whole object in one request
        else:
            match = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", content_range)
            if not match:
                raise GcsError(400, "invalid", f"bad Content-Range {content_range!r}")
            first = int(match.group(1)) if match.group(1) is not None else None
            total = None if match.group(3) == "*" else int(match.group(3))
        if first is not None and length:
            if first > received:
                raise GcsError(
                    400, "invalid", f"chunk starts at {first} but {received} bytes were received"
                )
            with open(part, "r+b") as handle:
                # A repeated chunk (the client did not see our answer) overwrites the same bytes.
                handle.seek(first)
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, COPY_CHUNK_BYTES))
                    if not chunk:
                        raise GcsError(400, "invalid", "the request body ended early")
                    handle.write(chunk)
                    remaining -= len(chunk)
                handle.truncate(first + length)
            received = first + length
        else:
            self._drain()
        self._body_consumed = True
        if total is None or received < total:
            headers = {"Range": f"bytes=0-{received - 1}"} if received else {}
            self._send(308, b"", headers)
            return
        if received > total:
            raise GcsError(
                400, "invalid", f"received {received} bytes, more than the {total} announced"
            )
        digest = Digest()
        with open(part, "rb") as handle:
            while chunk := handle.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
        self._verify_client_hashes(session["resource"], digest)
        resource = self.store.finalize(
            session["bucket"],
            session["name"],
            part,
            digest,
            content_type=session.get("content_type"),
            metadata=session["resource"].get("metadata"),
            query=session["query"],
        )
        session_path.write_text(json.dumps({**session, "finished": resource}), encoding="utf-8")
        self._send_json(200, resource)


def serve(host: str, port: int, state_dir: Path, owner: str | None = None) -> None:
    """Serve the JSON API on host:port for the objects under `state_dir/gcs` until SIGTERM."""
    store = ObjectStore(state_dir)
    handler = type("Handler", (_Handler,), {"store": store})
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True

    _log.info("GCS JSON API serving on http://%s:%s (objects under %s)", host, port, store.root)
    serve_until_stopped(server, owner, _log)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--owner", help="pid:start_ticks of a process whose exit stops us")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    serve(args.host, args.port, args.state_dir.resolve(), args.owner)


if __name__ == "__main__":
    main()
