"""pandas.read_sql of one PostgreSQL table: through iadb against psycopg 3.

A benchmark, not a test. In one run it fills a table with N rows (default
1,000,000) with psycopg, then reads the whole table into a DataFrame with
``pandas.read_sql`` twice: through iadb (``postgresql+iadb://``, the iadb
server in front of the same PostgreSQL) and directly (``postgresql+psycopg://``),
and prints the seconds of each and their ratio.

    pip install ./client/python pandas sqlalchemy "psycopg[binary]"
    cargo build --release -p iadb-server --no-default-features --features postgres
    python client/python/bench/read_sql.py \\
        --pg-url postgresql://iadb:iadb-test-pw@127.0.0.1:5432/iadb_test \\
        --server-bin target/release/iadb-server

``--server-bin`` starts a server of its own on 127.0.0.1 (its database is
``--pg-url``); ``--server HOST:PORT`` uses a running one instead (its
default database must be that PostgreSQL). The table
(``bench_read_sql``) is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
import psycopg
import sqlalchemy as sa

TABLE = "bench_read_sql"
QUERY = "SELECT id, name, score, created, amount FROM %s ORDER BY id" % TABLE


def fill(pg_url: str, rows: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS %s" % TABLE)
        conn.execute(
            "CREATE TABLE %s (id bigint PRIMARY KEY, name text NOT NULL, score double precision,"
            " created timestamp, amount numeric(12, 2))" % TABLE)
        conn.execute(
            "INSERT INTO %s SELECT g, 'name-' || g, g * 0.5, timestamp '2024-01-01' + g * interval '1 second',"
            " mod(g, 100000) / 100.0 FROM generate_series(1, %%s) AS g" % TABLE, (rows,))
        conn.execute("ANALYZE %s" % TABLE)


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


def timed_read(engine) -> "tuple[float, pd.DataFrame]":
    started = time.perf_counter()
    df = pd.read_sql(sa.text(QUERY), engine)
    return time.perf_counter() - started, df


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", required=True, help="postgresql://user:pass@host:port/db")
    p.add_argument("--server", help="a running iadb server (HOST:PORT) whose default database is --pg-url")
    p.add_argument("--server-bin", help="start this iadb-server on 127.0.0.1 instead")
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args()
    if bool(args.server) == bool(args.server_bin):
        p.error("give one of --server and --server-bin")

    proc = None
    try:
        if args.server_bin:
            proc, address = start_server(args.server_bin, args.pg_url)
        else:
            address = args.server
        started = time.perf_counter()
        fill(args.pg_url, args.rows)
        print("filled %s with %d rows in %.1fs" % (TABLE, args.rows, time.perf_counter() - started))

        direct = sa.create_engine(args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
        through = sa.create_engine("postgresql+iadb://%s/" % address)
        # One small read each first: connections made, dialects initialized.
        for engine in (direct, through):
            pd.read_sql(sa.text(QUERY + " LIMIT 10"), engine)
        t_direct, df_direct = timed_read(direct)
        t_iadb, df_iadb = timed_read(through)
        assert df_iadb.shape == df_direct.shape == (args.rows, 5), (df_iadb.shape, df_direct.shape)
        assert df_iadb.iloc[-1].tolist() == df_direct.iloc[-1].tolist(), (df_iadb.iloc[-1], df_direct.iloc[-1])
        print("pandas %s, SQLAlchemy %s, psycopg %s, python %s" % (
            pd.__version__, sa.__version__, psycopg.__version__, sys.version.split()[0]))
        print("psycopg 3 + pandas.read_sql: %.2fs (%d rows)" % (t_direct, len(df_direct)))
        print("iadb      + pandas.read_sql: %.2fs (%d rows)" % (t_iadb, len(df_iadb)))
        print("ratio iadb / psycopg: %.2f" % (t_iadb / t_direct))
        direct.dispose()
        through.dispose()
    finally:
        drop(args.pg_url)
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
