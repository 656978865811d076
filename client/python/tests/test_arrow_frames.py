"""The Arrow result reader against hand-made FetchAll frames (no server):
a stream that ends without its summary, counts that disagree, row batches
where Arrow was asked for, and bytes that do not decode are each INTERNAL,
never a short table."""

from __future__ import annotations

import grpc
import pytest

from conftest import in_ci

try:
    import pyarrow as pa
except ImportError as e:  # pragma: no cover - CI installs it
    if in_ci():
        raise
    pytest.skip("needs pyarrow: %s" % e, allow_module_level=True)

import iadb
from iadb._arrow import ArrowCollector
from iadb._proto import database_pb2 as pb


def ipc_pieces(table: pa.Table, max_rows: int):
    """The IPC stream of `table` cut as the server cuts it: the schema, one
    record batch per piece, the end-of-stream marker; with each piece's rows."""
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema)
    sizes = [0]
    positions = [sink.tell()]
    for batch in table.to_batches(max_chunksize=max_rows):
        writer.write_batch(batch)
        positions.append(sink.tell())
        sizes.append(batch.num_rows)
    writer.close()
    data = sink.getvalue().to_pybytes()
    starts = [0] + positions
    pieces = [(data[a:b], n) for a, b, n in zip(starts, positions, sizes)]
    pieces.append((data[positions[-1]:], 0))
    return pieces


def frames(table: pa.Table, *, max_rows=100, summary_rows=None, summary=True, drop_last=0):
    out = [pb.FetchAllResponse(header=pb.ResultHeader(
        columns=[pb.Column(name=n, declared_type="") for n in table.column_names]))]
    pieces = ipc_pieces(table, max_rows)
    if drop_last:
        pieces = pieces[:-drop_last]
    for ipc, rows in pieces:
        out.append(pb.FetchAllResponse(arrow=pb.ArrowData(ipc=ipc, rows=rows)))
    if summary:
        n = sum(rows for _, rows in pieces) if summary_rows is None else summary_rows
        out.append(pb.FetchAllResponse(summary=pb.ResultSummary(row_count=n)))
    return out


def read(frame_list):
    c = ArrowCollector()
    for f in frame_list:
        c.feed(f)
    c.check_end()
    return c.table()


TABLE = pa.table({"x": pa.array(range(1, 251), pa.int64()), "s": ["r%d" % i for i in range(250)]})


def broken(frame_list, match):
    with pytest.raises(iadb.DatabaseError) as info:
        read(frame_list)
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert match in info.value.message, info.value.message


def test_a_complete_stream_decodes():
    t = read(frames(TABLE))
    assert t.equals(TABLE) and t.column("x").num_chunks == 3


def test_without_summary():
    broken(frames(TABLE, summary=False), "without its summary")
    # Cut after some record batches (no end marker, no summary).
    broken(frames(TABLE, summary=False, drop_last=2), "without its summary")


def test_counts_that_disagree():
    broken(frames(TABLE, summary_rows=251), "counts 251 rows but 250 arrived")
    # A record batch missing: the summary counts more than arrived.
    fl = frames(TABLE)
    del fl[2]
    broken(fl, "counts 250 rows but 150 arrived")
    # Frames and summary agree, the decoded table does not.
    fl = frames(TABLE)
    fl[2].arrow.rows = 200
    fl[-1].summary.row_count = 350
    broken(fl, "holds 250 rows but its summary counts 350")


def test_row_batches_for_an_arrow_result():
    fl = frames(TABLE)
    fl.insert(1, pb.FetchAllResponse(batch=pb.RowBatch()))
    broken(fl, "upgrade iadb-server")
    # An old server's empty result: header and summary, no Arrow at all.
    broken([fl[0], pb.FetchAllResponse(summary=pb.ResultSummary(row_count=0))], "no Arrow data")


def test_bad_bytes_and_order():
    fl = frames(TABLE)
    fl[2] = pb.FetchAllResponse(arrow=pb.ArrowData(ipc=b"\xff\xff\xff\xff garbage", rows=fl[2].arrow.rows))
    broken(fl, "does not decode")
    fl = frames(TABLE)
    broken([fl[1]] + fl, "did not start with a header")
    broken(fl + [fl[-1]], "after the summary")
    broken(fl[:1] + fl, "a second header")


def test_schema_and_header_must_agree():
    fl = frames(TABLE)
    fl[0] = pb.FetchAllResponse(header=pb.ResultHeader(columns=[pb.Column(name="x")]))
    broken(fl, "schema has 2 columns but its header 1")


def test_no_columns_is_an_empty_table():
    c = ArrowCollector()
    c.feed(pb.FetchAllResponse(header=pb.ResultHeader()))
    c.feed(pb.FetchAllResponse(summary=pb.ResultSummary(row_count=0, rows_affected=3)))
    c.check_end()
    t = c.table()
    assert t.num_rows == 0 and t.num_columns == 0
