//! Streaming a statement.

use super::{
    arrow::ArrowChunks,
    binding::bind_params,
    call::{CallState, panic_error},
    decoding::{ResultLayout, prepare_checked},
    errors::{in_set, map_duckdb_error},
    pool::PooledConnection,
};
use crate::backend::session::step_batch_full;
use duckdb::{Connection, arrow::array::Array};
use iadb::{
    Column, Error, ExecuteOutcome, QueryEvent, Result, RowBatch, Value, arrow::ArrowWanted,
};
use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};
use tokio::sync::{mpsc, oneshot};

/// How a streamed statement ended on the worker side.
pub(super) enum Flow {
    /// Every row was sent; this is what the statement changed.
    Done(ExecuteOutcome),
    /// The consumer left; nothing more to send.
    Stopped,
}

/// The blocking half of `query`: runs the statement, sends the columns,
/// then every row, then the end (after the connection is back in the pool).
/// With `arrow`, the rows go as record batches where the columns allow it
/// ([`ArrowChunks`]).
pub(super) fn stream_statement(
    mut conn: PooledConnection,
    call: Arc<CallState>,
    sql: String,
    params: Vec<Value>,
    arrow: Option<ArrowWanted>,
    header: oneshot::Sender<Result<Arc<[Column]>>>,
    rows: mpsc::Sender<Result<QueryEvent>>,
) {
    let mut header = Some(header);
    let run = catch_unwind(AssertUnwindSafe(|| {
        produce_rows(&conn, &call, &sql, &params, arrow, &mut header, &rows)
    }));
    let panicked = run.is_err();
    let result = run.unwrap_or_else(|panic| Err(panic_error(panic)));
    conn.reuse = call.finish() && !panicked;
    // Back in the pool before the consumer hears of the end.
    drop(conn);
    match (result, header.take()) {
        (Err(e), Some(header)) => {
            let _ = header.send(Err(e));
        }
        (Err(e), None) => {
            let _ = rows.blocking_send(Err(e));
        }
        (Ok(Flow::Done(outcome)), None) => {
            let _ = rows.blocking_send(Ok(QueryEvent::Done(outcome)));
        }
        (Ok(Flow::Done(_)), Some(header)) => {
            let _ = header.send(Err(Error::internal(
                "DuckDB result ended before its columns",
            )));
        }
        (Ok(Flow::Stopped), _) => {}
    }
}

pub(super) fn produce_rows(
    conn: &PooledConnection,
    call: &CallState,
    sql: &str,
    params: &[Value],
    arrow: Option<ArrowWanted>,
    header: &mut Option<oneshot::Sender<Result<Arc<[Column]>>>>,
    rows: &mpsc::Sender<Result<QueryEvent>>,
) -> Result<Flow> {
    let conn = conn.get()?;
    if !call.enter() {
        return Ok(Flow::Stopped);
    }
    let mut stmt = prepare_checked(conn, sql)?;
    // Executes in streaming mode; the returned iterator is not used: rows
    // are pulled chunk by chunk with `step` below.
    let executed = stmt
        .stream_arrow(bind_params(params, Some(call)))
        .map_err(map_duckdb_error)?;
    drop(executed);
    call.leave();
    let layout = ResultLayout::of(&stmt)?;
    let changed_rows = layout.is_changed_rows(sql);
    let columns: Arc<[Column]> = if changed_rows {
        Arc::from(Vec::new())
    } else {
        layout.columns.clone()
    };
    if let Some(header) = header.take()
        && header.send(Ok(columns)).is_err()
    {
        return Ok(Flow::Stopped);
    }
    let mut arrow = arrow
        .filter(|_| !changed_rows)
        .and_then(|wanted| ArrowChunks::new(&layout.columns, wanted));
    let mut outcome = ExecuteOutcome::default();
    let mut number = 0u64;
    loop {
        if !call.enter() {
            return Ok(Flow::Stopped);
        }
        let chunk = stmt.step().map_err(map_duckdb_error);
        call.leave();
        let Some(chunk) = chunk? else {
            break;
        };
        if changed_rows {
            for row in 0..chunk.len() {
                number += 1;
                if let Value::Int(n) = layout.decode_row(&chunk, row, number)?[0] {
                    outcome.rows_affected += u64::try_from(n).unwrap_or(0);
                }
            }
            continue;
        }
        if let Some(arrow) = arrow.as_mut() {
            if !arrow.send_chunk(&layout, &chunk, &mut number, rows)? {
                return Ok(Flow::Stopped);
            }
            continue;
        }
        // The chunk's rows go to the consumer in batches, as the sqlx
        // adapters send theirs.
        let mut batch = RowBatch::new();
        for row in 0..chunk.len() {
            number += 1;
            let values = match layout.decode_row(&chunk, row, number) {
                Ok(values) => values,
                Err(e) => {
                    // The rows read before the error go out before it.
                    if !batch.is_empty() && rows.blocking_send(Ok(QueryEvent::Rows(batch))).is_err()
                    {
                        return Ok(Flow::Stopped);
                    }
                    return Err(e);
                }
            };
            batch.push(&values);
            if step_batch_full(&batch)
                && rows
                    .blocking_send(Ok(QueryEvent::Rows(batch.take())))
                    .is_err()
            {
                return Ok(Flow::Stopped);
            }
        }
        if !batch.is_empty() && rows.blocking_send(Ok(QueryEvent::Rows(batch))).is_err() {
            return Ok(Flow::Stopped);
        }
    }
    Ok(Flow::Done(outcome))
}

/// Runs `sql` once per parameter set inside the caller's transaction; the
/// error of a failing set names its index.
pub(super) fn apply_sets(
    conn: &Connection,
    call: &CallState,
    sql: &str,
    param_sets: &[Vec<Value>],
) -> Result<u64> {
    let mut rows_affected = 0u64;
    if param_sets.is_empty() {
        return Ok(rows_affected);
    }
    let mut stmt = prepare_checked(conn, sql).map_err(|e| in_set(0, e))?;
    for (index, params) in param_sets.iter().enumerate() {
        let changed = stmt
            .execute(bind_params(params, Some(call)))
            .map_err(|e| in_set(index, map_duckdb_error(e)))?;
        rows_affected += changed as u64;
    }
    Ok(rows_affected)
}

/// Every row of a statement, decoded (for the migration runner, whose
/// queries return a handful of rows).
pub(super) fn fetch_rows(
    conn: &Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Vec<Value>>> {
    let mut stmt = prepare_checked(conn, sql)?;
    let executed = stmt
        .stream_arrow(bind_params(params, None))
        .map_err(map_duckdb_error)?;
    drop(executed);
    let layout = ResultLayout::of(&stmt)?;
    let mut rows = Vec::new();
    while let Some(chunk) = stmt.step().map_err(map_duckdb_error)? {
        for row in 0..chunk.len() {
            let number = u64::try_from(rows.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            rows.push(layout.decode_row(&chunk, row, number)?);
        }
    }
    Ok(rows)
}
