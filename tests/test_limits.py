"""Resource limits: traces stream in bounded memory; oversized sweeps are refused before they start."""

import tracemalloc

import pytest

from kvplan.cli import main
from kvplan.simulation.trace import TraceWorkload


def _write_trace(path, lines: int) -> None:
    row = '{"prompt_len": 1200, "output_len": 300, "arrival": %d, "prefix_group": "sys", "prefix_len": 1000}\n'
    with open(path, "w") as f:
        for i in range(lines):
            f.write(row % (i // 100))


def _peak_while_reading(path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = TraceWorkload(path).validate()
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_trace_reading_memory_does_not_grow_with_length(tmp_path):
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    _write_trace(small, 2_000)
    _write_trace(large, 100_000)
    n_small, peak_small = _peak_while_reading(small)
    n_large, peak_large = _peak_while_reading(large)
    assert (n_small, n_large) == (2_000, 100_000)
    # 50x the lines, the same working set: one line and one WorkItem at a time
    assert peak_large < 2 * peak_small + 64 * 1024, (peak_small, peak_large)


def test_bad_trace_line_is_reported_with_its_number(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt_len": 10, "output_len": 5}\n{"prompt_len": 10, "output_len": -1}\n')
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", str(trace)])
    err = capsys.readouterr().err
    assert code == 2 and f"{trace}:2" in err and err.count("\n") == 1


def test_sweep_beyond_the_memory_limit_is_refused_before_it_starts(capsys):
    code = main(["sweep", "-m", "all", "--gpu", "all", "--tp", "1,2,4,8", "--kv-dtype", "auto,fp8,int8,int4",
                 "--context", "1:64000:1", "--max-memory", "64MiB"])
    err = capsys.readouterr().err
    assert code == 2 and "memory" in err and err.count("\n") == 1


def test_huge_prompt_lengths_are_cut_without_building_them():
    from kvplan.simulation.workload import WorkItem

    item = WorkItem(0, 0.0, 5, 3_000_000_000, prefix_group=0, prefix_len=1000)
    assert len(item.prompt_ids(8192)) == 8192 and item.prompt_ids(8192)[:1000] == item.prompt_ids(1000)
