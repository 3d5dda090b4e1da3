"""The triage handoff between the preprocessing and postprocessing steps (see wingpt/safety/handoff.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from wingpt_client import Triage, WingptClientError

from wingpt.safety.handoff import TriageHandoff

FLAGS = '{"level":"emergency","categories":["stroke_signs"],"notice":"请立即拨打120"}'


def test_a_triage_is_taken_once_by_its_request_id(tmp_path: Path) -> None:
    handoff = TriageHandoff(tmp_path)
    handoff.put("req-1", FLAGS)
    handoff.put("req-2", '{"level":"none","categories":[],"notice":""}')
    assert handoff.take("req-1") == FLAGS
    assert handoff.take("req-1") is None
    assert handoff.take("req-2") is not None
    assert list(tmp_path.iterdir()) == []


def test_a_request_without_an_id_hands_nothing_over(tmp_path: Path) -> None:
    handoff = TriageHandoff(tmp_path)
    handoff.put("", FLAGS)
    assert handoff.take("") is None
    assert list(tmp_path.iterdir()) == []


def test_client_chosen_ids_cannot_escape_the_directory(tmp_path: Path) -> None:
    inner = tmp_path / "handoff"
    handoff = TriageHandoff(inner)
    handoff.put("../../etc/passwd", FLAGS)
    assert [p.parent for p in inner.iterdir()] == [inner]
    assert not (tmp_path / "etc").exists()
    assert handoff.take("../../etc/passwd") == FLAGS


def test_files_left_by_failed_requests_are_swept(tmp_path: Path) -> None:
    handoff = TriageHandoff(tmp_path, ttl_s=0.05)
    handoff.put("never-taken", FLAGS)
    stale = next(tmp_path.iterdir())
    os.utime(stale, (time.time() - 60, time.time() - 60))
    time.sleep(0.06)
    handoff.put("fresh", FLAGS)
    assert [p.name for p in tmp_path.iterdir()] == [handoff._path("fresh").name]


def test_the_client_reads_the_triage_json() -> None:
    triage = Triage.from_json(FLAGS)
    assert triage == Triage(level="emergency", categories=("stroke_signs",), notice="请立即拨打120")
    assert triage.flagged
    assert not Triage.from_json('{"level":"none","categories":[],"notice":""}').flagged
    with pytest.raises(WingptClientError, match="malformed triage"):
        Triage.from_json('{"level": "emergency"}')
