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

/// Reads frames from `next` until the schema is known; then the stream of
/// the batches that follow. `next` gives `None` when the stream ended
/// without a status (an error then).
pub(crate) async fn open<'a, S>(columns: Arc<[Column]>, mut frames: S) -> Result<ArrowStream<'a>>
where
    S: futures::Stream<Item = Result<Frame>> + Send + Unpin + 'a,
{
    let mut reader = ArrowFrames::default();
    let mut first = Vec::new();
    let schema = loop {
        if let Some(schema) = reader.schema() {
            break schema;
        }
        match frames.next().await {
            Some(frame) => match reader.frame(frame?)? {
                Step::Batches(batches) => first.extend(batches),
                Step::Done => {
                    return Err(Error::internal(
                        "result stream broken: a summary before the Arrow schema",
                    ));
                }
            },
            None => {
                return Err(Error::internal(
                    "result stream broken: it ended before the Arrow schema",
                ));
            }
        }
    };
    let batches = async_stream::try_stream! {
        for batch in first {
            yield batch;
        }
        loop {
            let frame = match frames.next().await {
                Some(frame) => frame?,
                None => Err(Error::internal(format!(
                    "result stream broken: it ended after {} rows without its summary, so \
                     the result may be incomplete",
                    reader.rows
                )))?,
            };
            match reader.frame(frame)? {
                Step::Batches(batches) => {
                    for batch in batches {
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
