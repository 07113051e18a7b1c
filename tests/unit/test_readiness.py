"""Waiting for the tables or the blocks at start-up, on a fake clock."""

from __future__ import annotations

from twisted.internet import defer, task

from synapse_tchap_guard.readiness import WAIT_SECONDS, Readiness


def test_waiters_go_on_as_soon_as_it_is_ready() -> None:
    clock = task.Clock()
    readiness = Readiness(clock, "the blocks in force")
    waiting = defer.ensureDeferred(readiness.wait())
    clock.advance(WAIT_SECONDS - 1)
    assert not waiting.called
    readiness.set_ready()
    assert waiting.result is True
    assert clock.getDelayedCalls() == []  # the timeout is cancelled


def test_after_the_wait_requests_go_on_without_it_then_stop_waiting() -> None:
    clock = task.Clock()
    readiness = Readiness(clock, "the blocks in force")
    waiting = defer.ensureDeferred(readiness.wait())
    clock.advance(WAIT_SECONDS)
    assert waiting.result is False
    later = defer.ensureDeferred(readiness.wait())
    assert later.result is False  # no more waiting once it gave up
    readiness.set_ready()
    assert defer.ensureDeferred(readiness.wait()).result is True
