"""The loopback fakes answer and stop at once, so tests that use them do not wait on them."""

import time

import httpx

from tests.fakes.server import LoopbackServer, send


class Echo(LoopbackServer):
    def handle(self, handler, method):
        send(handler, 200, {"method": method})


def test_a_fake_answers_a_kept_alive_get_without_the_nagle_delay():
    fake = Echo().start()
    try:
        with httpx.Client() as client:
            client.get(fake.origin + "/warm-up")
            times = []
            for _ in range(5):
                started = time.perf_counter()
                assert client.get(fake.origin + "/x").json() == {"method": "GET"}
                times.append(time.perf_counter() - started)
    finally:
        fake.stop()
    # With Nagle on, each answer waits ~40 ms for the client's delayed ACK.
    assert min(times) < 0.02, times


def test_a_fake_stops_without_waiting_out_a_half_second_poll():
    fake = Echo().start()
    time.sleep(0.1)  # serve_forever() is in its poll loop
    started = time.perf_counter()
    fake.stop()
    assert time.perf_counter() - started < 0.2
