"""Finds the object-store servers a run's paths go to and checks in seconds that each can be reached: Beam's clients
would retry a store they cannot reach for minutes (5 s, 10 s, ... 320 s a call) and then fail with a traceback.

A server the run names is checked (--s3_endpoint_url, STORAGE_EMULATOR_HOST), and so are AWS's and Google's own
endpoints when it names none: the one boto3 resolves for the run's S3 options (region, AWS_ENDPOINT_URL_S3), and
Google Cloud Storage's. Where the environment sets a proxy for the endpoint, the proxy is what must answer.
"""

import dataclasses
import os
import socket
import threading
import urllib.parse
import urllib.request

# Where google-cloud-storage sends gs:// calls unless STORAGE_EMULATOR_HOST (or its API_ENDPOINT_OVERRIDE) says.
GOOGLE_STORAGE = "https://storage.googleapis.com"
# What a message tells the user to do: about a server the run names, and about AWS's or Google's own.
OWN_SERVER = "check the store's address and that it is running"
NETWORK = "check this machine's network and proxy"


class StoreUnreachable(ValueError):
    """A store server the run's paths go to cannot be reached; the message names it, says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A store server a run talks to: its address, how a message names it, what to do when it does not answer."""

    address: str
    named: str
    advice: str


def endpoints(paths: list, pipeline_options=None) -> list:
    """The Endpoints of the store servers that `paths` go to, one per scheme."""
    from apache_beam.io.filesystems import FileSystems

    schemes = {FileSystems.get_scheme(path) for path in paths if path}
    found = []
    if "s3" in schemes:
        found += _s3_endpoint(pipeline_options or FileSystems._pipeline_options)
    if "gs" in schemes:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            found.append(Endpoint(emulator, f"STORAGE_EMULATOR_HOST {emulator}", OWN_SERVER))
        else:
            address = os.environ.get("API_ENDPOINT_OVERRIDE", GOOGLE_STORAGE)
            found.append(Endpoint(address, f"Google Cloud Storage at {address} (where gs:// paths go)",
                                  f"{NETWORK}, or set STORAGE_EMULATOR_HOST for a GCS-compatible server"))
    return found


def _s3_endpoint(pipeline_options) -> list:
    """[the address Beam's S3 client talks to]: boto3 resolves it from the same options Beam gives it. [] without
    boto3 (Beam's S3 filesystem then says what to install when the input is listed)."""
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    s3 = (pipeline_options or PipelineOptions([])).view_as(S3Options)
    if s3.s3_endpoint_url:
        return [Endpoint(s3.s3_endpoint_url, f"--s3_endpoint_url {s3.s3_endpoint_url}", OWN_SERVER)]
    try:
        import boto3
    except ImportError:
        return []
    try:
        address = boto3.session.Session().client("s3", region_name=s3.s3_region_name,
                                                 use_ssl=not s3.s3_disable_ssl).meta.endpoint_url
    except Exception as error:  # noqa: BLE001 - botocore's own words say what is wrong (a region it cannot use, ...)
        raise StoreUnreachable(f"s3:// cannot be reached with these options ({error}); check --s3_region_name and "
                               "the AWS_* settings, or name a server with --s3_endpoint_url") from None
    return [Endpoint(address, f"AWS S3 at {address} (where s3:// paths go)",
                     f"{NETWORK}, or name an S3-compatible server with --s3_endpoint_url")]


def check(paths: list, pipeline_options=None, timeout: float = 5.0) -> None:
    """Raises StoreUnreachable when a store server that `paths` go to cannot be reached within `timeout` seconds."""
    check_each(endpoints(paths, pipeline_options), timeout)


def check_each(found: list, timeout: float) -> None:
    """Raises StoreUnreachable for the first of the Endpoints `found` that cannot be reached within `timeout`."""
    for endpoint in found:
        why = reach(endpoint.address, timeout)
        if why:
            raise StoreUnreachable(f"{endpoint.named} does not answer: {why}; {endpoint.advice}")


def reach(address: str, timeout: float) -> str:
    """'' when a TCP connection to the server at `address` (or to the proxy the environment sets for it) opens
    within `timeout` seconds; else why not, in a few words."""
    parsed = urllib.parse.urlparse(address if "://" in address else f"http://{address}")
    try:
        host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError as error:  # a port that is no number
        return f"not an address ({error})"
    if not host:
        return "not an address (no host name)"
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        why = _connect(via.hostname or "", via.port or 80, timeout)
        return f"the proxy {via.hostname}:{via.port or 80} for it: {why}" if why else ""
    return _connect(host, port, timeout)


def _connect(host: str, port: int, timeout: float) -> str:
    addresses, why = _resolve(host, port, timeout)
    if why:
        return why
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as connection:
                connection.settimeout(timeout)
                connection.connect(address)
                return ""
        except ConnectionRefusedError:
            why = f"connection refused at {host}:{port}"
        except (socket.timeout, TimeoutError):
            why = f"no answer from {host}:{port} within {timeout:g} s (timed out)"
        except OSError as error:
            why = f"{error.strerror or error} ({host}:{port})"
    return why


def _resolve(host: str, port: int, timeout: float) -> tuple:
    """(addresses, '') or ([], why): name resolution bounded by `timeout`, which the resolver itself is not (a
    machine with no reachable name server waits for it several times over)."""
    result = {}

    def look_up() -> None:
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            result["error"] = error

    thread = threading.Thread(target=look_up, name="store-name-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    if "addresses" in result:
        return result["addresses"], ""
    if "error" in result:
        return [], f"the name {host} does not resolve ({result['error'].strerror or result['error']})"
    return [], f"the name {host} did not resolve within {timeout:g} s"
