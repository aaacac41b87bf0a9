"""S3Blobs against a real S3 HTTP endpoint (moto's server): objects, missing keys, digests, outages, credentials."""

from __future__ import annotations

import hashlib

import pytest

from model_store.blobs import check_digest, key_of
from model_store.errors import IntegrityError, StorageError
from model_store.s3_blobs import S3Blobs, parse_url
from tests.postgres_server import free_port
from tests.s3_server import S3Server

DATA = b"checkpoint bytes \x00\x01\x02" * 1000
KEY = key_of(hashlib.sha256(DATA).hexdigest())


def quick(url: str) -> S3Blobs:
    """Small limits, so an outage fails the call soon (the test does not measure how soon)."""
    return S3Blobs.from_url(url, connect_timeout=1.0, read_timeout=1.0, attempts=2)


def test_round_trip_puts_the_object_under_the_prefix(s3_bucket: str, s3_server: S3Server) -> None:
    blobs = S3Blobs.from_url(s3_bucket)
    blobs.put(KEY, DATA)
    assert blobs.get(KEY) == DATA
    assert blobs.describe() == s3_bucket
    bucket, prefix = parse_url(s3_bucket)
    stored = s3_server.client().get_object(Bucket=bucket, Key=f"{prefix}/{KEY}")
    assert stored["Body"].read() == DATA


def test_put_of_an_existing_key_leaves_the_object_alone(s3_bucket: str, s3_server: S3Server) -> None:
    bucket, prefix = parse_url(s3_bucket)
    planted = b"what another writer stored first"
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/{KEY}", Body=planted)
    blobs = S3Blobs.from_url(s3_bucket)
    blobs.put(KEY, DATA)  # the key exists: no upload
    assert blobs.get(KEY) == planted


def test_put_refuses_data_its_key_does_not_name(s3_bucket: str) -> None:
    blobs = S3Blobs.from_url(s3_bucket)
    with pytest.raises(IntegrityError):
        blobs.put(KEY, DATA + b"!")
    with pytest.raises(FileNotFoundError):
        blobs.get(KEY)


def test_missing_key_is_file_not_found(s3_bucket: str) -> None:
    with pytest.raises(FileNotFoundError, match=f"no object {s3_bucket}/{KEY}"):
        S3Blobs.from_url(s3_bucket).get(KEY)


def test_a_key_that_is_not_a_digest_is_refused(s3_bucket: str) -> None:
    with pytest.raises(ValueError, match="not an object key"):
        S3Blobs.from_url(s3_bucket).get("../etc/passwd")


def test_check_digest_refuses_an_object_changed_in_the_bucket(s3_bucket: str, s3_server: S3Server) -> None:
    blobs = S3Blobs.from_url(s3_bucket)
    blobs.put(KEY, DATA)
    assert check_digest(KEY, blobs.get(KEY), blobs.describe()) == DATA
    bucket, prefix = parse_url(s3_bucket)
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/{KEY}", Body=DATA[:-1])
    with pytest.raises(IntegrityError, match="refusing it"):
        check_digest(KEY, blobs.get(KEY), blobs.describe())


def test_paused_server_is_a_storage_error_then_serves_again(s3_bucket: str, s3_server: S3Server) -> None:
    blobs = quick(s3_bucket)
    blobs.put(KEY, DATA)
    s3_server.pause()
    try:
        with pytest.raises(StorageError, match=f"reading {s3_bucket}/{KEY}: .*[Tt]imeout") as caught:
            blobs.get(KEY)
        with pytest.raises(StorageError, match=f"writing {s3_bucket}/{KEY}"):
            blobs.put(KEY, DATA)
    finally:
        s3_server.resume()
    assert "Traceback" not in str(caught.value)
    assert blobs.get(KEY) == DATA


def test_no_server_at_the_endpoint_is_a_storage_error(monkeypatch: pytest.MonkeyPatch, s3_bucket: str) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="Could not connect to the endpoint URL"):
        quick(s3_bucket).get(KEY)


def test_missing_bucket_is_a_storage_error(s3_bucket: str) -> None:
    with pytest.raises(StorageError, match="NoSuchBucket"):
        S3Blobs.from_url("s3://no-such-bucket-here/store").get(KEY)


def test_wrong_credentials_are_a_storage_error_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    server = S3Server()
    server.start()
    try:
        bucket = server.create_bucket()
        key_id, secret = server.enable_authentication()
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        url = f"s3://{bucket}/store"

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret + "x")
        with pytest.raises(StorageError, match="SignatureDoesNotMatch.*AWS_SECRET_ACCESS_KEY"):
            quick(url).get(KEY)
        with pytest.raises(StorageError, match=f"writing {url}/{KEY}: .*AWS_ACCESS_KEY_ID"):
            quick(url).put(KEY, DATA)

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
        with pytest.raises(StorageError, match="InvalidAccessKeyId"):
            quick(url).get(KEY)

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        quick(url).put(KEY, DATA)
        assert quick(url).get(KEY) == DATA
    finally:
        server.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/srv/store", "not an S3 location"),
        ("gs://bucket/prefix", "not an S3 location"),
        ("s3:///prefix", "no bucket"),
        ("s3://", "no bucket"),
        ("s3://Bucket_Name/prefix", "not a valid S3 bucket name"),
        ("s3://user@bucket/prefix", "no user, port"),
        ("s3://bucket/prefix?versionId=1", "no user, port"),
        ("s3://bucket/a/../b", "'..' segment"),
    ],
)
def test_bad_urls_are_value_errors_that_say_what_is_expected(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        S3Blobs.from_url(url)
    assert "s3://BUCKET/PREFIX" in str(caught.value) or "bucket name" in str(caught.value)


def test_url_without_a_prefix_uses_the_bucket_root() -> None:
    assert parse_url("s3://models") == ("models", "")
    assert parse_url("s3://models/a/b/") == ("models", "a/b")
