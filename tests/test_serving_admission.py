"""The orchestrator's triage-aware admission (wingpt/orchestrator/admission.py), in plain Python threads."""

from __future__ import annotations

import threading

import pytest

from wingpt.orchestrator.admission import ADMITTED, LEFT, ORDINARY, SHED, WAITING, WITHDRAWN, Admission, Ticket


def full(slots: int = 1, queue: int = 2, levels: tuple[str, ...] = ("emergency",), reserved: int = 0,
         ) -> tuple[Admission, list[Ticket], list[Ticket]]:
    """An admission whose slots are held and whose line is full of ordinary requests."""
    admission = Admission(slots, queue, levels, reserved)
    running = [admission.arrive("none") for _ in range(slots)]
    waiting = [admission.arrive("none") for _ in range(queue - reserved)]
    assert all(t is not None and t.state == ADMITTED for t in running)
    assert all(t is not None and t.state == WAITING for t in waiting)
    return admission, running, waiting


def test_a_free_slot_admits_at_once_and_a_busy_engine_puts_newcomers_in_line():
    admission = Admission(2, 2, ("emergency",))
    first, second, third = (admission.arrive("none") for _ in range(3))
    assert (first.state, second.state, third.state) == (ADMITTED, ADMITTED, WAITING)
    assert admission.stats().running == {"emergency": 0, ORDINARY: 2}
    assert admission.stats().waiting == {"emergency": 0, ORDINARY: 1}


def test_ordinary_requests_are_admitted_in_arrival_order():
    admission, (current,), line = full(queue=3)
    for served in range(1, len(line) + 1):
        admission.leave(current)
        assert [t.state for t in line] == [*[LEFT] * (served - 1), ADMITTED, *[WAITING] * (len(line) - served)]
        current = line[served - 1]


def test_an_emergency_goes_ahead_of_ordinary_requests_already_waiting():
    admission = Admission(1, 3, ("emergency",))
    running = admission.arrive("none")
    ordinary = admission.arrive("none")
    emergency = admission.arrive("emergency")
    admission.leave(running)
    assert emergency.state == ADMITTED and ordinary.state == WAITING


def test_when_the_line_is_full_an_ordinary_newcomer_is_refused_and_nobody_is_shed():
    admission, _, waiting = full()
    assert admission.arrive("none") is None
    assert admission.arrive("urgent") is None, "urgent has no priority unless configured"
    assert all(t.state == WAITING for t in waiting)
    assert admission.stats().refused == {"emergency": 0, ORDINARY: 2}


def test_an_emergency_sheds_the_newest_ordinary_waiting_request_and_never_a_running_one():
    admission, (running,), (older, newest) = full()
    emergency = admission.arrive("emergency")
    assert emergency.state == WAITING
    assert (running.state, older.state, newest.state) == (ADMITTED, WAITING, SHED)
    assert admission.stats().shed == {"emergency": 0, ORDINARY: 1}
    admission.leave(running)
    assert emergency.state == ADMITTED and older.state == WAITING


def test_an_emergency_is_refused_only_when_everything_waiting_is_an_emergency():
    admission, _, _ = full()
    assert admission.arrive("emergency") and admission.arrive("emergency")
    assert admission.stats().waiting == {"emergency": 2, ORDINARY: 0}
    assert admission.arrive("emergency") is None
    assert admission.stats().refused["emergency"] == 1


def test_with_two_levels_an_emergency_sheds_ordinary_first_then_urgent_and_urgent_sheds_only_ordinary():
    admission, _, (ordinary_a, ordinary_b) = full(levels=("emergency", "urgent"))
    urgent = admission.arrive("urgent")
    assert ordinary_b.state == SHED and urgent.state == WAITING
    assert admission.arrive("emergency").state == WAITING
    assert ordinary_a.state == SHED and urgent.state == WAITING
    assert admission.arrive("urgent") is None, "an urgent request never sheds an emergency or another urgent one"
    assert admission.arrive("emergency").state == WAITING
    assert urgent.state == SHED


def test_reserved_places_are_kept_for_priority_requests():
    admission, _, waiting = full(queue=3, reserved=1)
    assert len(waiting) == 2
    assert admission.arrive("none") is None, "the last place is reserved"
    assert admission.arrive("emergency").state == WAITING
    assert all(t.state == WAITING for t in waiting), "the reserved place was free: nobody shed"


def test_a_cancelled_waiting_request_leaves_the_line_and_its_place_is_free_again():
    admission, (running,), (first, second) = full()
    assert admission.withdraw(first)
    assert first.state == WITHDRAWN
    assert admission.arrive("none").state == WAITING
    admission.leave(running)
    assert second.state == ADMITTED
    assert not admission.withdraw(second), "an admitted request is stopped in the engine, not withdrawn"


def test_a_waiting_thread_wakes_when_it_is_shed_or_when_its_slot_comes():
    admission, (running,), (first, second) = full()
    states: dict[str, str] = {}
    threads = [threading.Thread(target=lambda n=n, t=t: states.__setitem__(n, admission.wait(t)))
               for n, t in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    emergency = admission.arrive("emergency")
    threads[1].join(timeout=30)
    assert states == {"second": SHED}
    admission.leave(running)
    assert emergency.state == ADMITTED and "first" not in states
    admission.leave(emergency)
    threads[0].join(timeout=30)
    assert states == {"first": ADMITTED, "second": SHED}


@pytest.mark.parametrize("kwargs", [{"slots": 0, "queue_size": 1}, {"slots": 1, "queue_size": 0},
                                    {"slots": 1, "queue_size": 2, "reserved": 3}])
def test_impossible_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        Admission(**kwargs)


def test_many_threads_arriving_and_leaving_never_run_more_than_the_slots():
    admission = Admission(3, 5, ("emergency",))
    running = 0
    most = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal running, most
        ticket = admission.arrive("emergency" if i % 4 == 0 else "none")
        if ticket is None or admission.wait(ticket) != ADMITTED:
            return
        with lock:
            running += 1
            most = max(most, running)
        with lock:
            running -= 1
        admission.leave(ticket)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stats = admission.stats()
    assert 1 <= most <= 3
    assert sum(stats.running.values()) == 0 and sum(stats.waiting.values()) == 0
