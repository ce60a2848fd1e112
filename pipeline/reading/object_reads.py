"""Reads whole objects from S3 and GCS with one client per worker process, shared by its read threads.

Beam's FileSystems.open builds a new client for every file it opens (for S3 a new boto3 session: ~150 ms of CPU,
most of it parsing the service's JSON model), so a worker reading small objects through it managed 5-8 objects a
second however many threads it used. One shared client, and one ranged GET per object (no HEAD first), reads them as
fast as boto3 or google-cloud-storage themselves do. The range also bounds the read at --max_file_bytes + 1 bytes.

Other schemes (hdfs://, azfs://, ...) are read through FileSystems.open by pipeline.reading.sources.
"""

import errno
import threading

from apache_beam.io.filesystems import FileSystems

from pipeline.options import READS_IN_FLIGHT

SCHEMES = ("s3", "gs")  # (share_s3_clients() is called at the end of this module, in every process importing it)
IN_FLIGHT = READS_IN_FLIGHT
_clients = {}
_lock = threading.Lock()


def read_object(path: str, limit: int, connections: int = IN_FLIGHT) -> bytes:
    """Up to `limit` + 1 bytes of the object at `path` (s3:// or gs://); OSError(ENOENT) when it is gone."""
    scheme, rest = path.split("://", 1)
    bucket, _, name = rest.partition("/")
    client = _client(scheme, connections)
    return _read_s3(client, bucket, name, limit) if scheme == "s3" else _read_gcs(client, bucket, name, limit)


def _client(scheme: str, connections: int):
    options = FileSystems._pipeline_options  # the run's options, set on every worker as in this process
    key = (scheme, id(options), connections)
    with _lock:
        if key not in _clients:
            _clients[key] = _s3_client(options, connections) if scheme == "s3" else _gcs_client(options, connections)
        return _clients[key]


def _s3_client(options, connections: int):
    """A boto3 client from the same S3Options Beam's own S3 filesystem reads, with a pool for `connections`."""
    import boto3
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options
    from botocore.config import Config

    s3 = (options or PipelineOptions([])).view_as(S3Options)
    return boto3.session.Session().client(
        "s3", region_name=s3.s3_region_name, api_version=s3.s3_api_version, use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify, endpoint_url=s3.s3_endpoint_url, aws_access_key_id=s3.s3_access_key_id,
        aws_secret_access_key=s3.s3_secret_access_key, aws_session_token=s3.s3_session_token,
        config=Config(max_pool_connections=connections))


def _gcs_client(options, connections: int):
    """Beam's own GCS client (its credentials, or the emulator's), with a connection pool for `connections`."""
    import requests.adapters
    from apache_beam.io.gcp import gcsio
    from apache_beam.options.pipeline_options import PipelineOptions

    client = gcsio.create_storage_client(options or PipelineOptions([]))
    adapter = requests.adapters.HTTPAdapter(pool_connections=connections, pool_maxsize=connections)
    for prefix in ("https://", "http://"):
        client._http.mount(prefix, adapter)
    return client


def _read_s3(client, bucket: str, name: str, limit: int) -> bytes:
    from botocore.exceptions import ClientError

    try:
        return client.get_object(Bucket=bucket, Key=name, Range=f"bytes=0-{limit}")["Body"].read()
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.response.get("Error", {}).get("Code", "")
        if status == 416 or code == "InvalidRange":  # an empty object has no byte 0
            return b""
        if status == 404 or code in ("NoSuchKey", "NotFound"):
            raise FileNotFoundError(errno.ENOENT, "gone since it was listed", f"s3://{bucket}/{name}") from None
        raise


def _read_gcs(client, bucket: str, name: str, limit: int) -> bytes:
    from google.api_core import exceptions

    try:
        return client.bucket(bucket).blob(name).download_as_bytes(start=0, end=limit, raw_download=True)
    except exceptions.RequestRangeNotSatisfiable:
        return b""
    except exceptions.NotFound:
        raise FileNotFoundError(errno.ENOENT, "gone since it was listed", f"gs://{bucket}/{name}") from None


def share_s3_clients() -> None:
    """Makes Beam's own S3 calls (listing, writing, renaming, deleting: every FileSystems call on s3://) share one
    boto3 client per set of options instead of building one per call, ~150 ms of CPU each: a run's few hundred such
    calls cost tens of seconds before. Beam's wrapper keeps per-instance download state, so each wrapper still gets
    its own; only the boto3 client under it, which is thread-safe, is shared. Idempotent; Beam is pinned (<2.78)."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:  # Beam without its aws extra: there are no s3:// calls to share a client for
        return
    if getattr(boto3_client.Client, "_shares_clients", False):
        return
    build = boto3_client.Client.__init__
    shared = {}

    def sharing(self, options):
        key = _options_key(options)
        with _lock:
            client = shared.get(key)
        if client is None:
            build(self, options)
            with _lock:
                shared.setdefault(key, self.client)
            return
        self.client = client
        self._download_request, self._download_stream, self._download_pos = None, None, 0

    boto3_client.Client.__init__ = sharing
    boto3_client.Client._shares_clients = True


def _options_key(options) -> tuple:
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    if isinstance(options, PipelineOptions):
        s3 = options.view_as(S3Options)
        fields = {name: getattr(s3, name, None) for name in _S3_FIELDS}
    else:
        fields = {name: (options or {}).get(name) for name in _S3_FIELDS}
    return tuple(sorted((name, str(value)) for name, value in fields.items()))


_S3_FIELDS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url", "s3_disable_ssl",
              "s3_region_name", "s3_api_version", "s3_verify")


share_s3_clients()
