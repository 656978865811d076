"""A 1,000,000-row result consumed through `iterate` with bounded memory.

Bound: the Python heap (tracemalloc) peaks below 16 MiB while streaming one
million rows, and the process RSS grows by less than 64 MiB. Holding the
same rows as a list of dicts would take roughly 200 MiB of Python heap
(1e6 dicts of ~184 bytes, plus the list), so either bound fails if the
client buffered the result.
"""

from __future__ import annotations

import gc
import time
import tracemalloc



N = 1_000_000
SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 1000000) "
    "SELECT x FROM c"
)
HEAP_BOUND = 16 * 1024 * 1024
RSS_GROWTH_BOUND = 64 * 1024 * 1024


def rss_bytes():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def test_million_rows_stream_with_bounded_memory(db):
    gc.collect()
    rss_before = rss_bytes()
    rss_peak = rss_before
    tracemalloc.start()
    started = time.perf_counter()
    count = 0
    total = 0
    try:
        async with db.iterate(SQL) as rows:
            async for row in rows:
                count += 1
                total += row["x"]
                if count % 50_000 == 0 and rss_before is not None:
                    rss_peak = max(rss_peak, rss_bytes())
            server_count = rows.row_count
        _, heap_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert count == N and server_count == N
    assert total == N * (N + 1) // 2
    growth = (rss_peak - rss_before) if rss_before is not None else 0
    print(
        "\n1,000,000 rows in %.1f s; Python heap peak %.2f MiB (bound %d MiB); "
        "RSS growth %.1f MiB (bound %d MiB)"
        % (elapsed, heap_peak / 2**20, HEAP_BOUND >> 20, growth / 2**20, RSS_GROWTH_BOUND >> 20)
    )
    assert heap_peak < HEAP_BOUND
    if rss_before is not None:
        assert growth < RSS_GROWTH_BOUND


def test_million_rows_stream_sync(sdb):
    # The sync iterator, without tracemalloc (which slows it): RSS only.
    rss_before = rss_bytes()
    rss_peak = rss_before
    count = 0
    with sdb.iterate(SQL) as rows:
        for _row in rows:
            count += 1
            if count % 50_000 == 0 and rss_before is not None:
                rss_peak = max(rss_peak, rss_bytes())
    assert count == N
    if rss_before is not None:
        growth = rss_peak - rss_before
        print("\nsync: 1,000,000 rows, RSS growth %.1f MiB" % (growth / 2**20))
        assert growth < RSS_GROWTH_BOUND
