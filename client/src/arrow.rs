//! Arrow results: [`RemoteDatabase::fetch_arrow`](crate::RemoteDatabase::fetch_arrow)
//! and [`Transaction::fetch_arrow`](crate::Transaction::fetch_arrow)
//! (docs/arrow.md).

use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use iadb::{
    Column, Error, Result,
    arrow::{ArrowDecoder, RecordBatch, SchemaRef},
    proto::{self, fetch_all_response::Frame},
};
use std::sync::Arc;

/// An Arrow result: its columns as the server reports them, its Arrow
/// schema (known before any batch, also for an empty result), and its
/// record batches. The stream ends with an error, never early, unless the
/// result came whole.
pub struct ArrowStream<'a> {
    /// The columns (names, declared types) of the header.
    pub columns: Arc<[Column]>,
    /// The schema every batch has.
    pub schema: SchemaRef,
    /// The record batches, one per batch the server sent.
    pub batches: BoxStream<'a, Result<RecordBatch>>,
}

impl std::fmt::Debug for ArrowStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrowStream")
            .field("columns", &self.columns)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ArrowStream<'_> {
    /// Every record batch.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        self.batches.try_collect().await
    }
}

/// What a frame after the header meant.
pub(crate) enum Step {
    /// Record batches (none for the schema's piece or the end marker).
    Batches(Vec<RecordBatch>),
    /// The summary: the result is whole (checked).
    Done,
}

/// Reads the frames of an Arrow result after its header.
#[derive(Default)]
pub(crate) struct ArrowFrames {
    decoder: ArrowDecoder,
    /// Rows in the record batches read so far.
    rows: u64,
    /// Rows the frames said they hold.
    announced: u64,
}

impl ArrowFrames {
    pub(crate) fn schema(&self) -> Option<SchemaRef> {
        self.decoder.schema()
    }

    pub(crate) fn frame(&mut self, frame: Frame) -> Result<Step> {
        match frame {
            Frame::Arrow(proto::ArrowData { ipc, rows }) => {
                self.announced += rows;
                let batches = self.decoder.push(ipc)?;
                self.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                if self.rows != self.announced {
                    return Err(Error::internal(format!(
                        "result stream broken: its Arrow frames announce {} rows but their \
                         batches hold {}",
                        self.announced, self.rows
                    )));
                }
                Ok(Step::Batches(batches))
            }
            Frame::Summary(summary) => {
                self.decoder.finish().map_err(|e| {
                    Error::internal(format!(
                        "result stream broken: it ended after {} rows before its Arrow end \
                         marker ({})",
                        self.rows,
                        e.message()
                    ))
                })?;
                if summary.row_count != self.rows {
                    return Err(Error::internal(format!(
                        "result stream broken: its summary counts {} rows but {} arrived",
                        summary.row_count, self.rows
                    )));
                }
                Ok(Step::Done)
            }
            Frame::Batch(_) => Err(Error::internal(
                "result stream broken: rows for a fetch that asked for Arrow",
            )),
            Frame::Header(_) => Err(Error::internal("result stream broken: a second header")),
        }
    }
}

/// A frame after the header, checked by [`ArrowFrames::check`]: what it
/// meant, and the schema once known.
pub(crate) struct Checked {
    pub(crate) schema: Option<SchemaRef>,
    pub(crate) step: Step,
}

impl ArrowFrames {
    /// [`ArrowFrames::frame`], with the schema as it stands after it.
    pub(crate) fn check(&mut self, frame: Frame) -> Result<Checked> {
        let step = self.frame(frame)?;
        Ok(Checked {
            schema: self.schema(),
            step,
        })
    }
}

/// Reads checked frames from `frames` until the schema is known; then the
/// stream of the batches that follow. `frames` gives `None` when the
/// stream ended without a status (an error then). Whoever checks the
/// frames (with one [`ArrowFrames`]) can act on a broken stream: a
/// transaction ends.
pub(crate) async fn open<'a, S>(columns: Arc<[Column]>, mut frames: S) -> Result<ArrowStream<'a>>
where
    S: futures::Stream<Item = Result<Checked>> + Send + Unpin + 'a,
{
    let mut first = Vec::new();
    let schema = loop {
        match frames.next().await {
            Some(checked) => {
                let Checked { schema, step } = checked?;
                match (step, schema) {
                    (Step::Batches(batches), schema) => {
                        first.extend(batches);
                        if let Some(schema) = schema {
                            break schema;
                        }
                    }
                    (Step::Done, _) => {
                        return Err(Error::internal(
                            "result stream broken: a summary before the Arrow schema",
                        ));
                    }
                }
            }
            None => {
                return Err(Error::internal(
                    "result stream broken: it ended before the Arrow schema",
                ));
            }
        }
    };
    let mut rows = first.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    let batches = async_stream::try_stream! {
        for batch in first {
            yield batch;
        }
        loop {
            let checked = match frames.next().await {
                Some(checked) => checked?,
                None => Err(Error::internal(format!(
                    "result stream broken: it ended after {rows} rows without its summary, so \
                     the result may be incomplete"
                )))?,
            };
            match checked.step {
                Step::Batches(batches) => {
                    for batch in batches {
                        rows += batch.num_rows() as u64;
                        yield batch;
                    }
                }
                Step::Done => break,
            }
        }
    };
    Ok(ArrowStream {
        columns,
        schema,
        batches: batches.boxed(),
    })
}
