"""Beam's external SDK worker pool for the loopback cluster: bound to 127.0.0.1, one pool for several engine workers.

    python deploy/cluster/worker_pool.py --port PORT

Beam's own pool (apache_beam.runners.worker.worker_pool_main) keeps one process per worker id, and each Spark
executor or Flink TaskManager numbers its SDK workers from 1-1 on: with two of them on one machine sharing one pool,
the first to stop worker 8-1 stopped the other's 8-1 too, which then waited two minutes for a worker that was gone
and failed its task. Here several workers may share an id; a stop request for an id that several running workers
share stops none of them (each exits by itself when its engine worker closes its control stream), one for an id
that one worker has stops it as Beam's pool does; a worker whose engine worker is gone (killed) is stopped within
seconds. Workers run this script's Python and log to the pool's output
(Beam's pool gives them a pipe nobody reads, which blocks a worker that prints 64 KiB).
"""

import argparse
import collections
import logging
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc
from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import kill_process_gracefully

LOG = logging.getLogger("worker_pool")


class SharedWorkerPool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
    def __init__(self):
        self._lock = threading.Lock()
        self._workers = collections.defaultdict(list)  # worker id -> [(process, its control endpoint)]

    def StartWorker(self, request, context):
        command = [sys.executable, "-c", "from apache_beam.runners.worker.sdk_worker import SdkHarness; "
                   f"SdkHarness({request.control_endpoint.url!r}, worker_id={request.worker_id!r}, "
                   "state_cache_size=0, data_buffer_time_limit_ms=-1).run()"]
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as error:
            return beam_fn_api_pb2.StartWorkerResponse(error=f"cannot start an SDK worker: {error}")
        LOG.info("started SDK worker %s (pid %d) for %s", request.worker_id, process.pid,
                 request.control_endpoint.url)
        with self._lock:
            self._workers[request.worker_id].append((process, request.control_endpoint.url))
        return beam_fn_api_pb2.StartWorkerResponse()

    def StopWorker(self, request, context):
        with self._lock:
            running = [entry for entry in self._workers.pop(request.worker_id, []) if entry[0].poll() is None]
            if len(running) > 1:  # not ours to pick: each exits when its own engine worker hangs up
                self._workers[request.worker_id] = running
                LOG.info("not stopping SDK worker %s: %d running workers carry that id", request.worker_id,
                         len(running))
                running = []
        for process, _ in running:
            LOG.info("stopping SDK worker %s (pid %d)", request.worker_id, process.pid)
            kill_process_gracefully(process)
        return beam_fn_api_pb2.StopWorkerResponse()

    def reap(self) -> None:
        """Forgets the workers that exited, and stops those whose engine worker is gone (its control endpoint no
        longer takes connections: a killed executor or TaskManager never hangs up, and its workers would wait)."""
        with self._lock:
            running = {worker_id: [entry for entry in entries if entry[0].poll() is None]
                       for worker_id, entries in self._workers.items()}
            self._workers = collections.defaultdict(list, {key: value for key, value in running.items() if value})
        for worker_id, entries in running.items():
            for process, endpoint in entries:
                if not _answers(endpoint):
                    LOG.info("stopping SDK worker %s (pid %d): %s is gone", worker_id, process.pid, endpoint)
                    kill_process_gracefully(process)


def _answers(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    pool = SharedWorkerPool()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
    server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    LOG.info("SDK worker pool listening on %s:%d", args.host, args.port)
    while True:
        time.sleep(5)
        pool.reap()


if __name__ == "__main__":
    sys.exit(main())
