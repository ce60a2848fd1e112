"""Runs the real scoring job, with a candidate model beside its model, through Beam's portable Job API on loopback and
checks it matches the in-memory run."""

import json
import os
import subprocess
import sys

from pipeline import timeline
from tests import portable_servers
from tests.helpers import REPO_ROOT, SAMPLE_INPUTS, SHIPPED_MODEL, log_tails, partition, read_rows

# The broken images make the errors output non-empty, so comparing it between runners means something.
INPUTS = [os.path.join(SAMPLE_INPUTS, "images", "fashion"), os.path.join(SAMPLE_INPUTS, "images", "broken")]
# A healthy portable run takes ~12 s; if the SDK worker cannot start (say the wrong `python` on PATH), the job waits
# for it forever, so the client timeout is what bounds the test.
CLIENT_TIMEOUT = 180


def _score(output: str, model: str, env: dict, *beam_flags, inputs=("--input", *INPUTS)) -> None:
    """Runs `python -m pipeline.score` to completion (bounded) from outside the checkout, and requires success."""
    command = [sys.executable, "-m", "pipeline.score", *inputs, "--output", output, "--model", model, *beam_flags]
    result = subprocess.run(command, cwd=os.path.dirname(output), env=env, capture_output=True, text=True,
                            timeout=CLIENT_TIMEOUT)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def _portable_flags(job_port: int, pool_port: int) -> list:
    # Nothing else is needed: --sdk_location defaults to 'default', which stages no SDK tarball (stager.py), and the
    # external worker pool runs the venv's python, so no --setup_file either.
    return ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{pool_port}"]


def _manifest(output: str) -> dict:
    with open(os.path.join(partition(output), "manifest.json"), encoding="utf-8") as stream:
        return json.load(stream)


def _manifest_counts(output: str) -> dict:
    counts = _manifest(output)["counts"]
    assert counts["matched"] == counts["scored"] + counts["failed"] and counts["invariant_holds"], counts
    return counts


def test_portable_job_api_run_matches_in_memory_run(tmp_path, tiny_model_path):
    servers_folder = tmp_path / "servers"
    servers_folder.mkdir()
    client_env = portable_servers.project_env(REPO_ROOT)
    # Only the worker pool, and so the SDK workers it starts, logs model loads: proof that those workers scored.
    load_log = str(tmp_path / "loads.txt")
    pool_env = dict(client_env, **{timeline.TIMELINE_ENV: load_log})
    portable, in_memory = str(tmp_path / "portable"), str(tmp_path / "in_memory")
    candidate = ["--candidate_model", SHIPPED_MODEL]  # scored beside the model, on the cluster as in memory
    with portable_servers.portable_servers(str(servers_folder), client_env, pool_env) as (job_port, pool_port):
        try:
            _score(portable, tiny_model_path, client_env, *candidate, *_portable_flags(job_port, pool_port))
        except (AssertionError, subprocess.TimeoutExpired) as failure:
            raise AssertionError(f"{failure}\n{log_tails(str(servers_folder))}") from failure
    _score(in_memory, tiny_model_path, client_env, *candidate)

    assert len([phase for _, _, phase in timeline.read(load_log) if phase == "model loaded"]) >= 2, \
        "no SDK worker of the pool loaded both models"
    for table in ("scores", "candidate", "errors"):
        assert read_rows(os.path.join(partition(portable), table)) == \
            read_rows(os.path.join(partition(in_memory), table))
    counts = _manifest_counts(portable)
    assert counts == _manifest_counts(in_memory)
    compared = [_manifest(output)["candidate"] for output in (portable, in_memory)]
    assert compared[0] == compared[1] and compared[0]["compared"] == counts["scored"]
    broken = len(os.listdir(INPUTS[1]))
    assert (counts["matched"], counts["failed"]) == (sum(len(os.listdir(folder)) for folder in INPUTS), broken)


def test_a_table_through_the_portable_job_api_matches_in_memory(tmp_path, tiny_model_path):
    """sample_inputs/catalogue.csv (relative URIs, the two broken files among them) with its ids kept, through the
    Job API: the same rows, table_row and kept columns included, and the same counts as in memory."""
    servers_folder = tmp_path / "servers"
    servers_folder.mkdir()
    client_env = portable_servers.project_env(REPO_ROOT)
    table = ["--input_table", os.path.join(SAMPLE_INPUTS, "catalogue.csv"), "--uri_column", "image",
             "--keep_columns", "product_id,title", "--files_per_chunk", "16"]
    portable, in_memory = str(tmp_path / "portable"), str(tmp_path / "in_memory")
    with portable_servers.portable_servers(str(servers_folder), client_env, client_env) as (job_port, pool_port):
        try:
            _score(portable, tiny_model_path, client_env, *_portable_flags(job_port, pool_port), inputs=table)
        except (AssertionError, subprocess.TimeoutExpired) as failure:
            raise AssertionError(f"{failure}\n{log_tails(str(servers_folder))}") from failure
    _score(in_memory, tiny_model_path, client_env, inputs=table)
    for name in ("scores", "errors"):
        assert read_rows(os.path.join(partition(portable), name)) == read_rows(os.path.join(partition(in_memory), name))
    counts = _manifest_counts(portable)
    assert counts == _manifest_counts(in_memory) and (counts["matched"], counts["failed"]) == (57, 2)
    assert {row["product_id"] for row in read_rows(os.path.join(partition(portable), "scores"))} == set(
        range(10_000, 10_055))
