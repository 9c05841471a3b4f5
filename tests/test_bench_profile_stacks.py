"""bench.profile_stacks: py-spy's raw stacks summed per function, and CPU shares per thread."""

from __future__ import annotations

import io
from pathlib import Path

from bench.profile_stacks import parse, print_top, thread_shares

RAW = [
    "main (a.py:1);loop (b.py:2);paint (c.py:3) 6",
    "main (a.py:1);loop (b.py:2) 3",
    "worker (d.py:4);encode (e.py:5) 1",
    " 7",  # no Python frame: not a function's time
    "garbage without a count",
]


def test_own_time_is_the_innermost_frame_and_total_counts_each_frame_once_per_stack() -> None:
    profile = parse(RAW)
    assert profile.samples == 10
    assert profile.own == {"paint (c.py:3)": 6, "loop (b.py:2)": 3, "encode (e.py:5)": 1}
    assert profile.total["main (a.py:1)"] == 9 and profile.total["loop (b.py:2)"] == 9
    assert profile.total["encode (e.py:5)"] == 1


def test_a_recursive_frame_is_not_counted_twice_in_total() -> None:
    assert parse(["f (x.py:1);f (x.py:1);g (x.py:2) 4"]).total["f (x.py:1)"] == 4


def test_print_top_gives_percent_of_samples(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text("\n".join(RAW))
    out = io.StringIO()
    print_top(stacks, out, top=1)
    assert "  60.0 %  paint (c.py:3)" in out.getvalue() and "  90.0 %  main (a.py:1)" in out.getvalue()


def test_thread_shares_are_percent_of_one_core_busiest_first() -> None:
    before = {"1 python (main)": 10.0, "2 worker": 1.0}
    after = {"1 python (main)": 11.5, "2 worker": 1.5, "3 new": 0.2, "4 idle": 0.0}
    assert thread_shares(before, after, seconds=10.0) == [("1 python (main)", 15.0), ("2 worker", 5.0),
                                                          ("3 new", 2.0)]
