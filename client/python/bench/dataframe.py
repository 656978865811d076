"""A million PostgreSQL rows into Python: iadb (Arrow and rows) against the
engine's own drivers, in one run (issue 14 Part 3's targets).

A benchmark, not a test. It fills a table (default 1,000,000 rows of
bigint, text of 32 characters, double precision and timestamp) with
psycopg, then reads ``SELECT id, name, score, created`` from it:

DataFrames (pandas):
  iadb      ``SyncDatabase.fetch_df`` (the server sends Arrow IPC)
  psycopg 3 ``pd.DataFrame(cur.fetchall(), columns=...)``
  connectorx ``cx.read_sql(url, query)``
  ADBC      ``adbc_driver_postgresql.dbapi`` → ``fetch_arrow_table().to_pandas()``
Arrow tables (no pandas): iadb ``fetch_arrow`` (and with a parameter, which
keeps the server off PostgreSQL's binary COPY), ADBC ``fetch_arrow_table``;
polars: iadb ``fetch_polars``, connectorx ``return_type="polars"``.
Rows (lists of tuples): iadb ``dbapi`` ``cursor.fetchall()`` (rows, and
``arrow=True``: Arrow record batches turned into tuples) and
``SyncDatabase.fetch_all`` (dicts, the original API), psycopg 3
``cursor.fetchall()``.

Each is measured ``--repeat`` times (default 3), alternating; the best time
counts. It prints the seconds and each iadb figure's ratio to the others.

    pip install ./client/python pyarrow pandas polars connectorx \\
        adbc-driver-postgresql "psycopg[binary]"
    cargo build --release --no-default-features --features postgres -p iadb-server
    python client/python/bench/dataframe.py \\
        --pg-url postgresql://iadb:iadb-test-pw@127.0.0.1:5432/iadb_test \\
        --server-bin target/release/iadb-server

``--server-bin`` starts a server of its own on 127.0.0.1 (its database is
``--pg-url``); ``--server HOST:PORT`` uses a running one instead. The
table (``bench_dataframe``) is dropped at the end. ``--profile`` prints a
cProfile of one ``fetch_df`` and one iadb rows read (where the client's
time goes).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time

import pandas as pd
import psycopg
import pyarrow as pa

import iadb
import iadb.dbapi

TABLE = "bench_dataframe"
QUERY = "SELECT id, name, score, created FROM %s" % TABLE
COLUMNS = ["id", "name", "score", "created"]


def fill(pg_url: str, rows: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS %s" % TABLE)
        conn.execute("CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, score double precision,"
                     " created timestamp)" % TABLE)
        conn.execute("INSERT INTO %s SELECT g, md5(g::text), g * 0.5,"
                     " timestamp '2024-01-01' + g * interval '1 second' FROM generate_series(1, %%s) AS g"
                     % TABLE, (rows,))
        conn.execute("VACUUM ANALYZE %s" % TABLE)


def drop(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS %s" % TABLE)


def start_server(binary: str, pg_url: str):
    folder = tempfile.mkdtemp(prefix="iadb-bench-")
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--database-url", pg_url],
                            cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=open(os.path.join(folder, "server.log"), "wb"))
    line = proc.stdout.readline().decode().strip()
    prefix = "iadb-server listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit("the server did not start: %r (log in %s)" % (line, folder))
    return proc, line[len(prefix):]


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", required=True, help="postgresql://user:pass@host:port/db")
    p.add_argument("--server", help="a running iadb server (HOST:PORT) whose default database is --pg-url")
    p.add_argument("--server-bin", help="start this iadb-server on 127.0.0.1 instead")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="print a cProfile of the iadb client")
    p.add_argument("--keep", action="store_true", help="keep the table at the end")
    args = p.parse_args()
    if bool(args.server) == bool(args.server_bin):
        p.error("give one of --server and --server-bin")

    import adbc_driver_postgresql.dbapi as adbc
    import connectorx as cx
    try:
        import polars as pl
    except ImportError:
        pl = None

    print("load average before: %s" % loadavg())
    proc = None
    try:
        if args.server_bin:
            proc, address = start_server(args.server_bin, args.pg_url)
        else:
            address = args.server
        started = time.perf_counter()
        fill(args.pg_url, args.rows)
        print("filled %s with %d rows in %.1fs" % (TABLE, args.rows, time.perf_counter() - started))

        sdb = iadb.SyncDatabase(address, max_message_bytes=256 * 1024 * 1024)
        sdb.connect()
        iconn = iadb.dbapi.connect(address, autocommit=True)
        aiconn = iadb.dbapi.connect(address, autocommit=True, arrow=True)
        pconn = psycopg.connect(args.pg_url, autocommit=True)
        aconn = adbc.connect(args.pg_url)

        def iadb_df():
            return sdb.fetch_df(QUERY)

        def iadb_arrow():
            return sdb.fetch_arrow(QUERY)

        def iadb_arrow_with_parameter():
            # A parameter keeps PostgreSQL's Arrow off binary COPY (docs/arrow.md):
            # the same rows through the extended protocol, for comparison.
            return sdb.fetch_arrow(QUERY + " WHERE id > ?", [0])

        def iadb_polars():
            return sdb.fetch_polars(QUERY)

        def dbapi_rows(conn):
            cur = conn.cursor()
            cur.execute(QUERY)
            rows = cur.fetchall()
            cur.close()
            return rows

        def iadb_rows():
            return dbapi_rows(iconn)

        def iadb_rows_via_arrow():
            return dbapi_rows(aiconn)

        def iadb_fetch_all():
            r = sdb.fetch_all(QUERY)
            assert r.success, r.error_message
            return r.data

        def psycopg_rows():
            with pconn.cursor() as cur:
                cur.execute(QUERY)
                return cur.fetchall()

        def psycopg_df():
            with pconn.cursor() as cur:
                cur.execute(QUERY)
                return pd.DataFrame(cur.fetchall(), columns=COLUMNS)

        def cx_df():
            return cx.read_sql(args.pg_url, QUERY)

        def cx_polars():
            return cx.read_sql(args.pg_url, QUERY, return_type="polars")

        def adbc_arrow():
            with aconn.cursor() as cur:
                cur.execute(QUERY)
                return cur.fetch_arrow_table()

        def adbc_df():
            return adbc_arrow().to_pandas()

        cases = [
            ("df", "iadb fetch_df (Arrow)", iadb_df),
            ("df", "psycopg 3 + pandas.DataFrame", psycopg_df),
            ("df", "connectorx read_sql", cx_df),
            ("df", "ADBC fetch_arrow_table().to_pandas()", adbc_df),
            ("arrow", "iadb fetch_arrow", iadb_arrow),
            ("arrow", "iadb fetch_arrow with a parameter (no COPY)", iadb_arrow_with_parameter),
            ("arrow", "ADBC fetch_arrow_table", adbc_arrow),
            ("rows", "iadb dbapi cursor.fetchall() (tuples)", iadb_rows),
            ("rows", "iadb dbapi arrow=True fetchall() (tuples)", iadb_rows_via_arrow),
            ("rows", "iadb fetch_all (QueryResult of dicts)", iadb_fetch_all),
            ("rows", "psycopg 3 cursor.fetchall() (tuples)", psycopg_rows),
        ]
        if pl is not None:
            cases[7:7] = [("polars", "iadb fetch_polars", iadb_polars),
                          ("polars", "connectorx read_sql(polars)", cx_polars)]

        # Warm up (connections made, caches filled) and check the results.
        shapes = {}
        for _, name, fn in cases:
            out = fn()
            n = out.num_rows if isinstance(out, pa.Table) else len(out)
            shapes[name] = n
            assert n == args.rows, (name, n)
            del out
        df_i, df_p = iadb_df(), psycopg_df()
        assert list(df_i.columns) == COLUMNS and df_i["id"].sum() == df_p["id"].sum()
        assert set(df_i["name"]) == set(df_p["name"])
        del df_i, df_p

        best = {name: float("inf") for _, name, _ in cases}
        for _ in range(args.repeat):
            for _, name, fn in cases:
                t0 = time.perf_counter()
                out = fn()
                best[name] = min(best[name], time.perf_counter() - t0)
                del out

        from importlib.metadata import version
        print("python %s; %s" % (sys.version.split()[0], ", ".join(
            "%s %s" % (name, version(name)) for name in (
                "pandas", "pyarrow", "polars", "psycopg", "connectorx", "adbc-driver-postgresql", "grpcio",
                "protobuf") if name != "polars" or pl is not None)))
        print("%d rows of (bigint, text(32), double, timestamp), best of %d:" % (args.rows, args.repeat))
        group = None
        for kind, name, _ in cases:
            if kind != group:
                group = kind
                print("  %s" % {"df": "pandas DataFrame", "arrow": "Arrow table", "polars": "polars DataFrame",
                                 "rows": "Python rows"}[kind])
            print("    %-42s %7.3f s" % (name, best[name]))

        def ratio(a, b):
            return "%s / %s = %.2f (>1: iadb faster)" % (b, a, best[b] / best[a])

        print("ratios:")
        for other in ("psycopg 3 + pandas.DataFrame", "connectorx read_sql", "ADBC fetch_arrow_table().to_pandas()"):
            print("  fetch_df vs %s" % ratio("iadb fetch_df (Arrow)", other))
        print("  fetch_arrow vs %s" % ratio("iadb fetch_arrow", "ADBC fetch_arrow_table"))
        print("  fetch_arrow through COPY vs %s" % ratio("iadb fetch_arrow",
                                                         "iadb fetch_arrow with a parameter (no COPY)"))
        print("  rows vs %s" % ratio("iadb dbapi cursor.fetchall() (tuples)", "psycopg 3 cursor.fetchall() (tuples)"))
        print("  rows (arrow=True) vs %s" % ratio("iadb dbapi arrow=True fetchall() (tuples)",
                                                  "psycopg 3 cursor.fetchall() (tuples)"))

        if args.profile:
            for name, fn in (("iadb fetch_df", iadb_df), ("iadb dbapi fetchall", iadb_rows),
                             ("iadb dbapi arrow=True fetchall", iadb_rows_via_arrow)):
                print("\ncProfile of one %s:" % name)
                prof = cProfile.Profile()
                prof.enable()
                fn()
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(12)

        sdb.disconnect()
        iconn.close()
        aiconn.close()
        pconn.close()
        aconn.close()
    finally:
        if not args.keep:
            drop(args.pg_url)
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        print("load average after: %s" % loadavg())


if __name__ == "__main__":
    main()
