"""A store that cannot be reached at all fails the run before any work: exit 2 in seconds, one line that names the
endpoint and why, for s3:// and gs://, for --input, --output and --model, whether the run names the server or goes
to AWS's or Google's own. Offline: the endpoints are host names that can never resolve (RFC 2606's .invalid), a port
nothing listens on, and a listener whose queue is full."""

import os
import socket
import subprocess
import sys
import time

import pytest

from pipeline import score, store_endpoints
from pipeline.report import report
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS
from tests.portable_servers import free_port

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

STORE_VARIABLES = ("STORAGE_EMULATOR_HOST", "API_ENDPOINT_OVERRIDE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                   "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                   "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def no_store_settings(monkeypatch, tmp_path):
    """The tests set the store's address themselves; nothing of the machine's own settings reaches them (its
    environment, nor a region in ~/.aws/config)."""
    for name in STORE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "no-aws-file"))
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    yield
    FileSystems.set_options(PipelineOptions([]))


def test_the_default_endpoints_are_aws_and_googles_own():
    from apache_beam.options.pipeline_options import PipelineOptions

    def addresses(paths, *flags):
        return [endpoint.address for endpoint in store_endpoints.endpoints(paths, PipelineOptions(list(flags)))]

    assert addresses(["gs://shop/images/", "/local/out"]) == ["https://storage.googleapis.com"]
    assert addresses(["s3://shop/images/"]) == ["https://s3.amazonaws.com"]  # as boto3 resolves it, offline
    assert addresses(["s3://shop/x"], "--s3_region_name", "eu-west-1") == ["https://s3.eu-west-1.amazonaws.com"]
    assert addresses(["s3://shop/x"], "--s3_endpoint_url", "http://127.0.0.1:8333") == ["http://127.0.0.1:8333"]
    assert addresses(["/local/images", "relative/out"]) == []


def test_reach_says_why_in_a_few_words(monkeypatch):
    assert "the name store.example.invalid does not resolve" in store_endpoints.reach("http://store.example.invalid",
                                                                                       2.0)
    refused = free_port()
    assert store_endpoints.reach(f"http://127.0.0.1:{refused}", 2.0) == f"connection refused at 127.0.0.1:{refused}"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        assert store_endpoints.reach(f"127.0.0.1:{port}", 2.0) == ""  # answers, and fills the listener's queue
        started = time.monotonic()
        said = store_endpoints.reach(f"http://127.0.0.1:{port}", 1.0)  # a full queue drops the handshake
        assert said == f"no answer from 127.0.0.1:{port} within 1 s (timed out)"
        assert time.monotonic() - started < 5
    assert store_endpoints.reach("http://127.0.0.1:notaport", 1.0).startswith("not an address")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{refused}")  # the proxy is what must answer
    said = store_endpoints.reach("https://storage.googleapis.com", 1.0)
    assert said == f"the proxy 127.0.0.1:{refused} for it: connection refused at 127.0.0.1:{refused}"


CASES = [(scheme, flag, named) for scheme in ("s3", "gs") for flag in ("--input", "--output", "--model")
         for named in (False, True)]


@pytest.mark.parametrize("scheme,flag,named", CASES)
def test_an_unreachable_store_is_exit_2_in_one_line_within_seconds(scheme, flag, named, shipped_model, tmp_path,
                                                                   capsys, monkeypatch):
    """`named`: the run names its server (--s3_endpoint_url, STORAGE_EMULATOR_HOST); else AWS's or Google's own
    endpoint, moved to a name that cannot resolve by the setting each client library itself reads."""
    nowhere = f"https://{scheme}-store.example.invalid"
    extra = []
    if scheme == "s3" and named:
        extra = ["--s3_endpoint_url", nowhere]
    elif scheme == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", nowhere)  # boto3's own setting
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST" if named else "API_ENDPOINT_OVERRIDE", nowhere)
    paths = {"--input": os.path.join(SAMPLE_INPUTS, "images"), "--output": str(tmp_path / "out"),
             "--model": shipped_model, flag: f"{scheme}://no-such-bucket/x/{'*' if flag == '--input' else ''}"}
    if flag == "--model":
        paths[flag] += "model.keras"
    started = time.monotonic()
    code = score.run([argument for pair in paths.items() for argument in pair] + extra + ["--progress_seconds", "0"])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == score.EXIT_USAGE and len(err.strip().splitlines()) == 1, err
    said = {("s3", True): f"--s3_endpoint_url {nowhere}", ("gs", True): f"STORAGE_EMULATOR_HOST {nowhere}",
            ("s3", False): f"AWS S3 at {nowhere} (where s3:// paths go)",
            ("gs", False): f"Google Cloud Storage at {nowhere} (where gs:// paths go)"}[scheme, named]
    assert err.startswith(f"error: {said} does not answer: the name {scheme}-store.example.invalid does not resolve")
    assert seconds < 15 and not (tmp_path / "out").exists()


def test_the_cli_says_one_line_and_no_traceback(tmp_path):
    """As a user runs it, on a machine that cannot reach Google: the real command, its own process."""
    environment = {name: value for name, value in os.environ.items() if name not in STORE_VARIABLES}  # as the fixture
    environment["API_ENDPOINT_OVERRIDE"] = "https://storage.example.invalid"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline.score", "--input", "gs://no-such-bucket/x/*", "--output",
                           str(tmp_path / "out")], cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: Google Cloud Storage at https://storage.example.invalid (where gs:// paths "
                                  "go) does not answer: the name storage.example.invalid does not resolve")
    assert time.monotonic() - started < 60  # the import of TensorFlow and Beam included; Beam alone retried 142 s


def test_the_report_of_an_unreachable_store_is_exit_2(tmp_path, capsys):
    code = report.main(["s3://shop/scores/dt=2026-11-22", "--s3_endpoint_url", "http://s3.example.invalid:8333"])
    err = capsys.readouterr().err
    assert code == 2 and "--s3_endpoint_url http://s3.example.invalid:8333 does not answer" in err


def test_s3_options_boto3_cannot_use_are_exit_2_in_one_line(tmp_path, capsys):
    code = score.run(["--input", "s3://shop/x/*", "--output", str(tmp_path / "out"), "--s3_region_name",
                      "no region!"])
    err = capsys.readouterr().err
    assert code == score.EXIT_USAGE and len(err.strip().splitlines()) == 1, err
    assert "s3:// cannot be reached with these options" in err and "--s3_region_name" in err
