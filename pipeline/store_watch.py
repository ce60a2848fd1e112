"""Watches the object-store servers a run names while it runs: one that stops answering ends the run within seconds,
with one line that says so, instead of after the many minutes Beam's retries would wait on it (they pause 5 s, then
10 s, ... up to 320 s, for every call).

The servers watched are those preflight checked (store_endpoints): the ones the run names, or AWS's and Google's.
"""

import signal
import threading

from pipeline import store_endpoints


class StoreGone(Exception):
    """The store stopped answering during the run; the message says which."""


class StoreWatch:
    """A context manager: while it is open, every `every` seconds it connects to each store server the run uses;
    after `misses` failures in a row it interrupts the main thread, and the KeyboardInterrupt that arrives there is
    turned into StoreGone when the block ends. Should the block not end within `grace` seconds even so (the main
    thread caught the interrupt somewhere in Beam, or waits where a signal cannot reach it), `stuck(reason)` is
    called from the watch's thread: the command passes one that says so in its line and ends the process."""

    def __init__(self, paths: list, every: float = 3.0, misses: int = 2, stuck=None, grace: float = 15.0):
        self.paths, self.every, self.misses = list(paths), every, misses
        self.stuck, self.grace = stuck, grace
        self.gone = ""
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "StoreWatch":
        self._endpoints = store_endpoints.endpoints(self.paths)  # resolved once: the watch only connects
        if self._endpoints:
            self._main = threading.main_thread().ident
            self._thread = threading.Thread(target=self._watch, name="store-watch", daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        missed = 0
        while not self._stop.wait(self.every):
            try:
                store_endpoints.check_each(self._endpoints, timeout=2.0)
                missed = 0
            except store_endpoints.StoreUnreachable as error:
                missed += 1
                if missed >= self.misses:
                    self.gone = str(error)
                    signal.pthread_kill(self._main, signal.SIGINT)  # wakes the main thread even from a sleep
                    if not self._stop.wait(self.grace) and self.stuck is not None:
                        self.stuck(self.gone)
                    return

    def __exit__(self, kind, error, trace) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.gone and kind is not None and issubclass(kind, KeyboardInterrupt):
            raise StoreGone(self.gone) from None
        return False

