"""StopRelay: the first rank's error reaches every rank through the store
(two relays on one HashStore stand for two ranks)."""
import threading

import torch.distributed as dist

from pcka_det.engine.stop_relay import StopRelay


def _ranks(store):
    seen = {0: [], 1: []}
    events = {0: threading.Event(), 1: threading.Event()}

    def on_stop(rank):
        def record(message):
            seen[rank].append(message)
            events[rank].set()
        return record

    relays = [StopRelay(store, rank, interval=0.01, on_stop=on_stop(rank))
              for rank in (0, 1)]
    return relays, seen, events


def test_the_first_error_reaches_the_other_rank_only():
    relays, seen, events = _ranks(dist.HashStore())
    for relay in relays:
        relay.start()
    assert relays[1].publish(ValueError('image 7 is corrupt')) is None
    assert events[0].wait(5)
    assert seen[0] == ['rank 1 stopped the run: ValueError: image 7 is '
                       'corrupt']
    # the rank that stopped is not stopped again by its own message
    relays[0].close()
    relays[1]._thread.join(5)
    assert seen[1] == []


def test_a_later_error_names_the_first_stop():
    relays, _, _ = _ranks(dist.HashStore())
    assert relays[1].publish(ValueError('image 7 is corrupt')) is None
    # rank 0's own error (the connection rank 1 closed) follows from it
    assert relays[0].publish(RuntimeError('Connection closed by peer')) == \
        'rank 1 stopped the run: ValueError: image 7 is corrupt'


def test_no_stop_no_call():
    relays, seen, _ = _ranks(dist.HashStore())
    for relay in relays:
        relay.start()
    threading.Event().wait(0.1)  # ten checks of the store
    for relay in relays:
        relay.close()
        relay._thread.join(5)
        assert not relay._thread.is_alive()
    assert seen == {0: [], 1: []}


class _SlowStore:
    """A store whose check takes ``delay`` seconds (a slow round trip)."""

    def __init__(self, delay):
        self.delay = delay
        self.entered = threading.Event()

    def check(self, keys):
        self.entered.set()
        threading.Event().wait(self.delay)
        return False


def test_close_waits_for_a_check_in_flight():
    """The run's end (close) waits until the thread is out of the store, so
    the process never exits with a store call in flight."""
    store = _SlowStore(0.5)
    relay = StopRelay(store, 0, interval=0.01).start()
    assert store.entered.wait(5)
    relay.close()
    assert not relay._thread.is_alive()
