"""End to end on a database-backed store: a version trained by a real `lstm-train --database-url` is served by a
real lstm-serve on the same PostgreSQL, and a promotion made by another process reaches it through NOTIFY (its
store poll is set to 60 s, so the periodic refresh cannot be what serves it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks import harness
from model_store.blobs import FolderBlobs
from model_store.catalog_store import CatalogStore
from model_store.s3_blobs import S3Blobs
from tests.conftest import save_tiny

pytestmark = pytest.mark.slow

TINY = ["--hidden-size", "6", "--num-layers", "1", "--max-epochs", "2", "--batch-size", "8", "--seq-len", "16"]
TINY += ["--short-batch-size", "8", "--no-progress", "--json"]
# Well under the 60 s store poll: a promotion served within it came by the notification.
NOTIFY_WAIT = 30.0
BODY = {"inputs": np.sin(0.2 * np.arange(30)).reshape(30, 1, 1).tolist()}

SET_ALIAS = """
import sys
from model_store.locations import open_store
store = open_store(sys.argv[1], sys.argv[2])
store.set_alias("lstm", "production", int(sys.argv[3]))
store.close()
"""


def served_version(url: str) -> int:
    response = httpx.post(f"{url}/predict", json=BODY, timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


@pytest.fixture(params=["folder objects", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder objects":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_bucket"))


def test_a_trained_version_is_served_and_a_promotion_elsewhere_arrives_by_notification(
    location: str, database_url: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    reach = ["--database-url", database_url, "--cache-dir", str(cache)]
    trained = subprocess.run(
        [sys.executable, "-m", "training", "--store", location, *reach, *TINY],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith("LSTM_")},
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout.splitlines()[-1])["version"] == 1  # promoted: nothing served before
    # A second version, not promoted, from this process: production stays on the trained one.
    blobs = FolderBlobs(Path(location) / "objects") if not location.startswith("s3://") else S3Blobs.from_url(location)
    writer = CatalogStore(database_url, blobs)
    assert save_tiny(writer, seed=5, hidden_size=6).version == 2
    writer.close()

    port = harness.free_port()
    command = [sys.executable, "-m", "service", "--store", location, *reach, "--host", harness.HOST]
    command += ["--port", str(port), "--no-grpc"]
    environment = os.environ | {"LSTM_POLL_INTERVAL": "60", "LSTM_LOG_LEVEL": "warning"}
    server = harness.start(command, port, tmp_path / "serve.log", env=environment)
    try:
        assert served_version(server.url) == 1
        promoted = subprocess.run(
            [sys.executable, "-c", SET_ALIAS, location, database_url, "2"], capture_output=True, text=True, timeout=300
        )
        assert promoted.returncode == 0, promoted.stderr
        promoted_at = time.monotonic()
        while served_version(server.url) != 2:
            assert time.monotonic() - promoted_at < NOTIFY_WAIT, "the promotion did not arrive by notification"
            time.sleep(0.1)
        print(f"promotion served {time.monotonic() - promoted_at:.2f} s after the other process committed it")
    finally:
        assert harness.stop(server) == 0, server.log.read_text()[-2000:]
