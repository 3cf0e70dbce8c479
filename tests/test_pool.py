"""The generic timeout process pool (``quantmedic.pipelines.evaluation.pool``) on checks that are not
grading: results in order, and the caller's value for an item that times out, crashes its worker or
raises. The checks are module-level functions here (they run in the real worker processes)."""

from __future__ import annotations

import os
import time

import pytest

from quantmedic.pipelines.evaluation.pool import CRASH, ERROR, TIMEOUT, Failure, PoolError, run_pool


def square(x: int) -> int:
    """Test hook: -1 hangs, -2 kills its worker, -3 raises; else the square."""
    if x == -1:
        time.sleep(60)
    if x == -2:
        os._exit(7)
    if x == -3:
        raise KeyError("no square")
    return x * x


def exit_at_start() -> None:
    os._exit(5)


def failed(x: int, failure: Failure) -> str:
    return f"{x}: {failure.kind}: {failure.reason}"


def test_results_in_order_and_the_callers_value_for_each_failure():
    items = [1, -1, 2, -2, 3, -3, 4]
    for workers in (1, 3):
        seen = []
        start = time.monotonic()
        results = run_pool(square, items, on_failure=failed, workers=workers, timeout=1.0,
                           progress=lambda done, total: seen.append((done, total)))
        assert time.monotonic() - start < 30
        assert results == [1, f"-1: {TIMEOUT}: timeout", 4, f"-2: {CRASH}: worker crashed (exit code 7)", 9,
                           f"-3: {ERROR}: KeyError: 'no square'", 16]
        assert seen == [(i, len(items)) for i in range(1, len(items) + 1)]


def test_nothing_to_do_bad_settings_and_workers_that_cannot_start():
    assert run_pool(square, [], on_failure=failed) == []
    with pytest.raises(ValueError, match="workers"):
        run_pool(square, [1], on_failure=failed, workers=0)
    with pytest.raises(ValueError, match="timeout"):
        run_pool(square, [1], on_failure=failed, timeout=0)
    with pytest.raises(PoolError, match="exit code 5"):
        run_pool(square, [1, 2], on_failure=failed, setup=exit_at_start)


def test_each_result_is_handed_over_as_it_comes():
    """``on_result`` gets every item's result once, as it finishes (how ``grade`` saves each one at once)."""
    items = [3, -2, 1, -3, 2]
    came: list[tuple[int, object]] = []
    results = run_pool(square, items, on_failure=failed, workers=2, timeout=5.0,
                       on_result=lambda index, result: came.append((index, result)))
    assert sorted(came) == sorted(enumerate(results)) and len(came) == len(items)


def test_ctrl_c_reaches_only_this_process_not_the_fork_server():
    """The fork server (and so every worker) starts with Ctrl-C ignored: Ctrl-C while workers start is this
    process's KeyboardInterrupt, never a worker's or the server's traceback (BrokenPipeError, KeyboardInterrupt)."""
    import signal
    from multiprocessing import forkserver

    run_pool(square, [2], on_failure=failed, workers=1)
    pid = forkserver._forkserver._forkserver_pid
    with open(f"/proc/{pid}/status") as status:
        ignored = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    assert ignored & (1 << (signal.SIGINT - 1))
