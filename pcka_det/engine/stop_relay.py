"""One rank's stop stops every rank, across machines.

When one rank of a distributed run raises (a corrupt image, a checkpoint
missing on one node, an out-of-memory error), the other ranks are waiting
in a collective for it. On one machine ``torchrun`` ends them; across
machines they wait for the backend's timeout (30 minutes of every GPU by
default with NCCL), and their logs never say why.

:class:`StopRelay` gives every stop one cause, seen by every rank: the rank
that raises writes its error to the process group's key-value store (first
writer wins), and a daemon thread on every rank checks that key once a
second (a TCP round trip to the store, not a collective, so nothing is added
to a training step). A rank that sees another rank's stop logs it through
MMEngine's logger ("rank 1 stopped the run: ValueError: ...") and exits
with status 1 at once: its main thread may be blocked inside a collective
that can only end at the timeout. A rank whose own error arrives after
another rank's stop (the broken connection to a rank that exited) names the
first stop as the cause.

Stop decisions that every rank reaches together (the non-finite guard's
limits, agreed by one all-reduce every ``level_check_interval`` steps) raise
on every rank at the same step and need no relay.
"""
import os
import sys
import threading
from typing import Callable, Optional

KEY = 'pcka_det/stop'


def describe(exc: BaseException) -> str:
    """``'ValueError: message'``: the error as its traceback's last line."""
    text = str(exc).strip()
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def _log(message: str) -> None:
    """``message`` as an error in the run's log (MMEngine's current logger:
    its file and the console), flushed."""
    try:
        from mmengine.logging import MMLogger
        logger = MMLogger.get_current_instance()
        logger.error(message)
        for handler in logger.handlers:
            handler.flush()
    except Exception:  # no logger: the console still shows it
        print(message, file=sys.stderr, flush=True)


def exit_now(message: str) -> None:
    """Log ``message``, then end the process with status 1 at once (the main
    thread may be stuck in a collective that ends only at the timeout)."""
    _log(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class StopRelay:
    """Relays the first stop of any rank to every rank.

    Args:
        store: The process group's key-value store (``torch.distributed``
            ``Store``: ``TCPStore`` in a real run, ``HashStore`` in tests).
        rank (int): This process's global rank.
        interval (float): Seconds between two checks of the store.
        on_stop (callable): Called with the message when another rank's stop
            is seen; :func:`exit_now` by default.
    """

    def __init__(self,
                 store,
                 rank: int,
                 interval: float = 1.0,
                 on_stop: Callable[[str], None] = exit_now):
        self.store = store
        self.rank = rank
        self.interval = interval
        self.on_stop = on_stop
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _read(self) -> Optional[tuple]:
        """``(rank, error)`` of the published stop, or None."""
        if not self.store.check([KEY]):
            return None
        rank, _, error = self.store.get(KEY).decode().partition('|')
        return int(rank), error

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            try:
                stop = self._read()
            except Exception:  # the store is gone: the run is ending
                return
            if stop is None:
                continue
            rank, error = stop
            if rank != self.rank and not self._done.is_set():
                self.on_stop(f'rank {rank} stopped the run: {error}')
            return

    def start(self) -> 'StopRelay':
        """Start the watching thread (a daemon: it never holds the process
        open)."""
        self._thread = threading.Thread(
            target=self._watch, name='pcka_det-stop-relay', daemon=True)
        self._thread.start()
        return self

    def publish(self, exc: BaseException) -> Optional[str]:
        """Publish this rank's error unless another rank's came first.

        Args:
            exc (BaseException): The error this rank raises.

        Returns:
            str or None: The first stop, ``'rank R stopped the run: ...'``,
            when it was another rank's; None when this rank's error is the
            run's stop.
        """
        self._done.set()
        value = f'{self.rank}|{describe(exc)}'
        try:
            first = self.store.compare_set(KEY, '', value).decode()
        except Exception:  # the store is gone with the rank hosting it
            return None
        rank, _, error = first.partition('|')
        if int(rank) == self.rank:
            return None
        return f'rank {rank} stopped the run: {error}'

    def close(self, timeout: float = 10.0) -> None:
        """Stop watching (the run ended on this rank), and wait until the
        thread has left the store: a check still in flight while the
        process exits and tears the store down can abort it ("terminate
        called without an active exception", exit status 134, seen once in
        a Slurm run that had finished training).

        Args:
            timeout (float): Seconds to wait for a check in flight (a TCP
                round trip; a dead store raises at once).
        """
        self._done.set()
        if self._thread is not None and \
                self._thread is not threading.current_thread():
            self._thread.join(timeout)


class RelayedStops:
    """A context in which this rank's error is relayed to every rank, and
    theirs to this one, once :meth:`start` has run (after the process group
    is initialised: a run's first collectives, the checks before the
    runner is built, are covered).

    An error raised in the block is published before it propagates; when
    another rank stopped first, the error is logged as following from that
    stop. Outside a process group of more than one rank it does nothing.

    Example:
        >>> with RelayedStops() as stops:
        ...     init_process_group(...); stops.start()
        ...     runner.train()
    """

    def __init__(self):
        self.relay: Optional[StopRelay] = None

    def __enter__(self) -> 'RelayedStops':
        return self

    def start(self) -> None:
        """Start relaying (a no-op without a process group of 2+ ranks)."""
        import torch.distributed as dist
        if self.relay is None and dist.is_available() and \
                dist.is_initialized() and dist.get_world_size() > 1:
            from torch.distributed.distributed_c10d import _get_default_store
            self.relay = StopRelay(_get_default_store(),
                                   dist.get_rank()).start()

    def __exit__(self, kind, exc, traceback) -> bool:
        if self.relay is None:
            return False
        self.relay.close()
        if exc is not None and not (isinstance(exc, SystemExit)
                                    and not exc.code):
            first = self.relay.publish(exc)
            if first is not None:
                _log(f'{first} (this rank\'s error follows from it: '
                     f'{describe(exc)})')
        return False
