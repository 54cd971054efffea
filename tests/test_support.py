"""tests/support.py's waiting: what it returns, when it gives up, what it says."""

from __future__ import annotations

import pytest

from tests.support import WaitTimeout, poll, wait_for


def answers(*values):
    """A condition that returns `values` one per call, and counts the calls."""
    remaining = list(values)

    def condition():
        condition.calls += 1
        return remaining.pop(0)

    condition.calls = 0
    return condition


def test_the_first_true_value_is_returned_without_further_calls():
    condition = answers(None, [], ("rest", "grpc"), "never asked")
    assert wait_for(condition, timeout=10, interval=0) == ("rest", "grpc")
    assert condition.calls == 3


def test_poll_gives_none_once_the_deadline_has_passed():
    condition = answers(False)
    assert poll(condition, timeout=0, interval=0) is None
    assert condition.calls == 1


def test_wait_for_fails_saying_what_it_waited_for():
    with pytest.raises(WaitTimeout, match=r"gave up after 0 s waiting for the emulator to answer$"):
        wait_for(answers(False), timeout=0, message="the emulator to answer")
    # A timeout is a test failure, not an error in the test's own code.
    assert issubclass(WaitTimeout, AssertionError)


def test_a_callable_message_describes_the_moment_of_the_timeout():
    log = []

    def condition():
        log.append("still starting")
        return False

    # Built before the wait, the message would show an empty log.
    with pytest.raises(WaitTimeout, match=r"the emulator; log: still starting$"):
        wait_for(condition, timeout=0, message=lambda: "the emulator; log: " + ", ".join(log))


def test_an_error_in_the_condition_ends_the_wait():
    def condition():
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="the process exited"):
        wait_for(condition, timeout=10, interval=0)
