"""The Dagster UI shows the pipeline: a real webserver, driven by headless Chromium.

After the README's first command (`dagster job execute … aws_to_bigquery`, on
the README tour's private cloud and checkout folder, shared with
test_readme_commands), starts `dagster-webserver` in that folder on a free
loopback port, asks its GraphQL API for the asset list, and renders the asset
catalog and the lineage graph in Chromium found on PATH (`apt-get install -y
chromium`; no browser download). The lineage screenshot is checked and, with
EXPORT_PIPELINE_UPDATE_DOCS=1, copied to docs/asset-graph.png (the README's
picture) — tests do not rewrite tracked files otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from export_pipeline.config import REPO_ROOT, current_config
from export_pipeline.definitions import build_definitions
from export_pipeline_tests.support.local_cloud import free_ports
from export_pipeline_tests.support.prerequisites import find_chromium
from export_pipeline_tests.support.readme_tour import Tour

pytestmark = pytest.mark.needs("chromium")
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")
# The code location as pyproject.toml's [tool.dagster] names it.
MODULE = "export_pipeline.definitions"
DOCS_PICTURE = REPO_ROOT / "docs" / "asset-graph.png"
UPDATE_DOCS_ENV = "EXPORT_PIPELINE_UPDATE_DOCS"
ERROR_TEXT = re.compile(
    r"Something went wrong|PythonError|Error loading|could not be loaded|"
    r"DagsterInvariantViolation|Traceback|failed to load",
    re.IGNORECASE,
)
WINDOW = (1500, 1900)
STARTUP_SECONDS = 180


@dataclass(frozen=True)
class Webserver:
    url: str
    home: Path
    log: Path

    def graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        assert "errors" not in body, body
        return body["data"]


def _expected() -> dict[str, str]:
    """'a/b/c' -> group, for every asset of the configuration in force."""
    defs = build_definitions(current_config())
    return {
        key.to_user_string(): assets_def.group_names_by_key[key]
        for assets_def in defs.assets or []
        for key in assets_def.keys
    }


@pytest.fixture(scope="module")
def webserver(tour: Tour, first_run: subprocess.CompletedProcess[str]) -> Iterator[Webserver]:
    """`dagster-webserver` started in the README tour's folder, after the README's command.

    Started there with no DAGSTER_HOME, as a user starts it in a checkout, it
    opens the instance the command wrote (the repository's dagster.yaml).
    """
    assert first_run.returncode == 0
    home = tour.folder
    (port,) = free_ports(1)
    log = home / "webserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(WEBSERVER), "-m", MODULE, "-h", "127.0.0.1", "-p", str(port)],
            cwd=home,
            env=tour.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Webserver(f"http://127.0.0.1:{port}", home, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster-webserver exited ({process.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{server.url}/server_info", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"dagster-webserver not up in {STARTUP_SECONDS}s:\n{log.read_text()}"
                    )
                time.sleep(0.5)
        # The first visit shows a "join the community" dialog over the page; it is
        # dismissed on the server (the UI's own mutation), so the screenshot shows the graph.
        assert server.graphql("mutation { setNuxSeen }")["setNuxSeen"] is True
        yield server
    finally:
        # Stop exactly the process group this fixture started (webserver + its code
        # server); the code server may wait for in-flight calls, and this state is
        # throwaway, so whatever is left after a few seconds is killed.
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _chromium(url: str, user_data_dir: Path, *action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(find_chromium()),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={user_data_dir}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--virtual-time-budget=15000",
            *action,
            url,
        ],
        capture_output=True,
        timeout=180,
    )


def _visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.DOTALL | re.IGNORECASE)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_graphql_lists_exactly_the_configured_assets(webserver: Webserver) -> None:
    data = webserver.graphql(
        """
        {
          workspaceOrError {
            __typename
            ... on Workspace {
              locationEntries {
                name
                locationOrLoadError { __typename ... on PythonError { message } }
              }
            }
          }
          assetNodes { assetKey { path } groupName }
        }
        """
    )
    entries = data["workspaceOrError"]["locationEntries"]
    assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
        (MODULE, "RepositoryLocation")
    ]
    shown = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in data["assetNodes"]}
    assert shown == _expected()


def test_catalog_page_shows_every_asset_and_no_error(webserver: Webserver, tmp_path: Path) -> None:
    done = _chromium(f"{webserver.url}/assets", tmp_path / "chromium", "--dump-dom")
    text = _visible_text(done.stdout.decode("utf-8", "replace"))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    missing = [key for key in _expected() if key.replace("/", " / ") not in text]
    assert missing == [], text[:3000]
    for group in set(_expected().values()):
        assert f" {group} " in text
    assert not ERROR_TEXT.search(text), ERROR_TEXT.search(text)


def test_lineage_page_renders_the_graph(webserver: Webserver, tmp_path: Path) -> None:
    expected = _expected()
    groups = sorted(set(expected.values()))
    # Open every group: the URL the UI itself writes when groups are expanded. The
    # group id is `global@global:<group>`, or `<repository>@<location>:<group>` when
    # the UI's per-code-location groups flag is on; both are given.
    expanded = ",".join(
        id_ for g in groups for id_ in (f"global@global:{g}", f"__repository__@{MODULE}:{g}")
    )
    url = f"{webserver.url}/asset-groups?expanded={quote(expanded, safe='')}"
    dom = _chromium(url, tmp_path / "chromium", "--dump-dom")
    text = _visible_text(dom.stdout.decode("utf-8", "replace"))
    assert "Global asset lineage" in text
    assert not ERROR_TEXT.search(text), ERROR_TEXT.search(text)
    # One node per asset, labelled with the last part of its key, each a different name.
    nodes = Counter(re.findall(r" (\w+) Latest event ", text))
    assert nodes == Counter(key.rsplit("/", 1)[-1] for key in expected), text[:3000]
    assert max(nodes.values()) == 1, nodes
    # After the README's command and its tour (`local mutate` adds an attribute to
    # both DynamoDB tables): every asset materialized, every table shows all its
    # checks, all passed but the DynamoDB tables' schema_unchanged (a WARN).
    assert "Never materialized" not in text, text[:3000]
    tables = [key for key in expected if key.startswith("bigquery/")]
    per_table = len(build_definitions(current_config()).resolve_asset_graph().asset_check_keys)
    per_table //= len(tables)
    node_badge = rf" (\w+) Latest event (?:(?!Latest event).)*? Asset checks (\d+) / {per_table}"
    badges = dict(re.findall(node_badge, text))
    assert len(badges) == len(tables), text[:3000]
    changed = {key.rsplit("/", 1)[-1] for key in tables if "/dynamodb_" in key}
    assert {name: int(n) for name, n in badges.items()} == {
        key.rsplit("/", 1)[-1]: per_table - (key.rsplit("/", 1)[-1] in changed) for key in tables
    }, text[:3000]

    picture = tmp_path / "asset-graph.png"
    shot = _chromium(url, tmp_path / "chromium", f"--screenshot={picture}")
    assert shot.returncode == 0, shot.stderr.decode()[-2000:]
    assert _png_size(picture) == WINDOW
    # The expanded graph (8 nodes with text) compresses to far more than a blank
    # page or two collapsed group boxes (about 100 KB at this size).
    assert picture.stat().st_size > 150_000
    if os.environ.get(UPDATE_DOCS_ENV) == "1":
        DOCS_PICTURE.parent.mkdir(exist_ok=True)
        shutil.copyfile(picture, DOCS_PICTURE)
