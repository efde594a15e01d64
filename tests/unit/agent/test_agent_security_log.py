"""The charger's security log on flash: append-only, power-loss tolerant, size-bounded."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from chargeward.agent.security_log import (
    CURRENT,
    LINE_MAX,
    SecurityLog,
    SecurityLogLimits,
    to_jsonl,
)
from chargeward.agent.upload import failure_status, log_filename, supported
from chargeward.errors import ConfigError, TransportError, UploadRefused

T0 = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
SMALL = SecurityLogLimits(max_file_bytes=LINE_MAX, max_files=3)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_appended_events_read_back_in_order_with_time_and_type(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path / "log")
    first = log.append("FailedToAuthenticateAtCsms", "HTTP 401", time=at(0), notify=False)
    second = log.append("InvalidFirmwareSignature", "image ab12: bad signature", time=at(1))
    assert (first.seq, second.seq) == (1, 2)
    got = log.entries()
    assert [(e.seq, e.type, e.time, e.notify) for e in got] == [
        (1, "FailedToAuthenticateAtCsms", at(0), False),
        (2, "InvalidFirmwareSignature", at(1), True),
    ]
    assert got[1].tech_info == "image ab12: bad signature"
    line = json.loads((tmp_path / "log" / CURRENT).read_text().splitlines()[1])
    assert line == {
        "seq": 2,
        "time": "2026-11-22T10:01:00.000+00:00",
        "type": "InvalidFirmwareSignature",
        "tech_info": "image ab12: bad signature",
        "notify": True,
    }


def test_times_are_stored_in_utc_and_naive_times_refused(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path)
    cet = dt.timezone(dt.timedelta(hours=1))
    log.append("SettingSystemTime", "", time=dt.datetime(2026, 11, 22, 11, 0, tzinfo=cet))
    assert log.entries()[0].time == T0
    assert log.entries()[0].time.tzinfo == dt.UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        log.append("SettingSystemTime", "", time=dt.datetime(2026, 11, 22))


def test_a_torn_last_line_is_skipped_and_the_next_entry_starts_on_a_new_line(
    tmp_path: Path,
) -> None:
    log = SecurityLog(tmp_path)
    log.append("StartupOfTheDevice", "slot a", time=at(0))
    log.append("TamperDetectionActivated", "slot b", time=at(1))
    path = tmp_path / CURRENT
    whole = path.read_bytes()
    path.write_bytes(whole[:-20])  # power lost in the middle of the second append
    after_restart = SecurityLog(tmp_path)
    assert [e.type for e in after_restart.entries()] == ["StartupOfTheDevice"]

    entry = after_restart.append("ResetOrReboot", "power returned", time=at(2))
    assert entry.seq == 2  # the torn entry never counted
    assert [e.type for e in after_restart.entries()] == ["StartupOfTheDevice", "ResetOrReboot"]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and lines[-2].startswith(b'{"seq":2')


def test_garbage_and_half_entries_never_crash_a_reader(tmp_path: Path) -> None:
    (tmp_path / CURRENT).write_bytes(
        b'{"seq":1,"time":"2026-11-22T10:00:00+00:00","type":"A","tech_info":"x"}\n'
        b"\xff\xfe not json\n"
        b'{"seq":"two","time":"2026-11-22T10:00:00+00:00","type":"B","tech_info":"x"}\n'
        b'{"seq":3,"time":"2026-11-22T10:00:00","type":"naive","tech_info":"x"}\n'
        b'{"seq":4,"time":"yesterday","type":"C","tech_info":"x"}\n'
        b"[1, 2, 3]\n"
        b"\n"
        b'{"seq":5,"time":"2026-11-22T10:05:00+00:00","type":"D","tech_info":"y"}'
    )
    log = SecurityLog(tmp_path)
    assert [(e.seq, e.type) for e in log.entries()] == [(1, "A"), (5, "D")]
    assert log.append("E", "", time=at(6)).seq == 6


def test_sequence_numbers_continue_across_restarts_and_rotations(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path, SMALL)
    for i in range(10):
        log.append("InvalidMessages", "x" * 400, time=at(i))
    assert len(log.files()) > 1
    again = SecurityLog(tmp_path, SMALL)
    assert again.append("InvalidMessages", "after restart", time=at(11)).seq == 11
    seqs = [e.seq for e in again.entries()]
    assert seqs == sorted(seqs) and seqs[-1] == 11


def test_rotation_keeps_the_newest_entries_and_bounds_the_flash_used(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path, SMALL)
    for i in range(200):
        log.append("InvalidMessages", f"frame {i} " + "z" * 300, time=at(i))
        assert len(log.files()) <= SMALL.max_files
        assert all(p.stat().st_size <= SMALL.max_file_bytes for p in log.files())
    assert log.size() <= SMALL.max_files * SMALL.max_file_bytes
    kept = log.entries()
    assert kept[-1].seq == 200 and kept[-1].tech_info.startswith("frame 199 ")
    seqs = [e.seq for e in kept]
    assert seqs == list(range(seqs[0], 201))  # a contiguous run of the newest entries
    assert seqs[0] > 1


def test_an_oversized_event_is_cut_so_one_line_fits_a_segment(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path, SMALL)
    entry = log.append("T" * 80, "\x01" * 10_000, time=at(0))  # every character escaped
    assert len(entry.type) == 50 and len(entry.tech_info) == 512
    assert (tmp_path / CURRENT).stat().st_size <= SMALL.max_file_bytes
    assert log.entries() == [entry]


def test_entries_filtered_by_oldest_and_latest_inclusive(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path)
    for i in range(6):
        log.append(f"E{i}", "", time=at(i * 10))
    assert [e.type for e in log.entries(oldest=at(20))] == ["E2", "E3", "E4", "E5"]
    assert [e.type for e in log.entries(latest=at(20))] == ["E0", "E1", "E2"]
    assert [e.type for e in log.entries(oldest=at(15), latest=at(40))] == ["E2", "E3", "E4"]
    assert log.entries(oldest=at(41), latest=at(49)) == []


def test_an_empty_or_missing_log_reads_as_no_entries(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path / "never-written")
    assert log.entries() == [] and log.files() == [] and log.size() == 0


def test_limits_refuse_segments_smaller_than_one_line() -> None:
    with pytest.raises(ConfigError):
        SecurityLogLimits(max_file_bytes=LINE_MAX - 1)
    with pytest.raises(ConfigError):
        SecurityLogLimits(max_files=0)


def test_upload_file_keeps_the_newest_entries_within_the_cap(tmp_path: Path) -> None:
    log = SecurityLog(tmp_path)
    for i in range(10):
        log.append("InvalidMessages", str(i), time=at(i))
    whole = to_jsonl(log.entries())
    assert len(whole.splitlines()) == 10
    line = len(whole) // 10
    capped = to_jsonl(log.entries(), max_bytes=3 * line + 1)
    assert [json.loads(x)["tech_info"] for x in capped.splitlines()] == ["7", "8", "9"]


def test_upload_status_names_and_file_names() -> None:
    assert failure_status(UploadRefused(403)) == "PermissionDenied"
    assert failure_status(UploadRefused(410)) == "PermissionDenied"
    assert failure_status(UploadRefused(413)) == "BadMessage"
    assert failure_status(TransportError("connection refused")) == "UploadFailure"
    assert supported("https://csms.example/logs/x") and supported("http://127.0.0.1:8/u")
    assert not supported("ftp://csms.example/logs") and not supported("file:///etc/passwd")
    name = log_filename("CP/1 ../x", "SecurityLog", 7, T0)
    assert name == "security-CP_1_.._x-20261122T100000Z-7.jsonl"
