"""Runs Beam's external worker pool bound to loopback only (Beam's own entry point binds every interface)."""

import sys

import grpc
from apache_beam.runners.worker import worker_pool_main

_make_server = grpc.server


def _loopback_server(*args, **kwargs):
    server = _make_server(*args, **kwargs)
    bind = server.add_insecure_port
    # worker_pool_main asks for '[::]:PORT'; tests must never listen beyond this machine.
    server.add_insecure_port = lambda address: bind(address.replace("[::]", "127.0.0.1"))
    return server


if __name__ == "__main__":
    worker_pool_main.grpc.server = _loopback_server
    worker_pool_main.main(sys.argv)
