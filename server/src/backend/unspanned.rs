//! A driver's stream polled without the call's span.
//!
//! sqlx wraps every stream it creates in the span current at its creation
//! (`sqlx_core::ext::async_stream::try_stream!` uses `in_current_span`) and
//! enters that span on every poll. A statement starts inside the call's
//! `rpc` span, so on a large result the span was entered and left twice per
//! row (the statement's stream and the connection's inside it): about 15 %
//! of the server's CPU on a PostgreSQL stream (bench/RESULTS.md).
//!
//! [`Unspanned`] creates the stream, and polls it until its first item (by
//! then sqlx has created the streams inside it), with a dispatcher that
//! delegates everything to the one in force but reports no current span:
//! the spans sqlx captures are empty, and entering them costs nothing.
//! Events and spans still go to the real subscriber, whose own record of
//! the current span is untouched, so a log line sqlx writes meanwhile (a
//! PostgreSQL NOTICE) is still inside the call's span. Later polls come
//! from the server's stream task, outside any span, as they did.

use futures::Stream;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tracing::{
    Dispatch, Event, Metadata,
    dispatcher::{self},
    level_filters::LevelFilter,
    span::{Attributes, Id, Record},
    subscriber::{Interest, Subscriber},
};
use tracing_core::span::Current;

/// The dispatcher in force, except that it reports no current span; with
/// the most verbose level enabled when it was made (`Dispatch` does not
/// give its subscriber's hint), so that it does not widen the level every
/// callsite is checked against.
struct Rootless(Dispatch, LevelFilter);

impl Rootless {
    fn over(dispatch: Dispatch) -> Self {
        Self(dispatch, LevelFilter::current())
    }
}

impl Subscriber for Rootless {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.1)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.record(span, values);
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.0.record_follows_from(span, follows);
    }

    fn event(&self, event: &Event<'_>) {
        self.0.event(event);
    }

    fn enter(&self, span: &Id) {
        self.0.enter(span);
    }

    fn exit(&self, span: &Id) {
        self.0.exit(span);
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.0.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.0.try_close(id)
    }

    fn current_span(&self) -> Current {
        Current::none()
    }
}

/// The [`Rootless`] dispatcher over the global one, made once: making a
/// dispatcher registers it with every callsite.
fn rootless() -> &'static Dispatch {
    static ROOTLESS: OnceLock<Dispatch> = OnceLock::new();
    ROOTLESS.get_or_init(|| {
        dispatcher::get_default(|global| Dispatch::new(Rootless::over(global.clone())))
    })
}

/// A driver's stream, created and first polled with no current span (see
/// the module's doc).
pub(crate) struct Unspanned<S> {
    inner: S,
    /// Whether an item came: from then on it is polled as it is.
    started: bool,
    rootless: &'static Dispatch,
}

impl<S: Stream + Unpin> Unspanned<S> {
    /// The stream `open` creates, created with no current span.
    pub(crate) fn new(open: impl FnOnce() -> S) -> Self {
        Self::over(rootless(), open)
    }

    /// As [`Unspanned::new`], with `rootless` the dispatcher to poll with.
    fn over(rootless: &'static Dispatch, open: impl FnOnce() -> S) -> Self {
        Self {
            inner: dispatcher::with_default(rootless, open),
            started: false,
            rootless,
        }
    }
}

impl<S: Stream + Unpin> Stream for Unspanned<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        if this.started {
            return Pin::new(&mut this.inner).poll_next(cx);
        }
        let polled =
            dispatcher::with_default(this.rootless, || Pin::new(&mut this.inner).poll_next(cx));
        this.started = polled.is_ready();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// The spans a test stream's two streams hold.
    type Held = (Option<tracing::Id>, Option<tracing::Id>);

    /// A stream made as sqlx makes its own: it takes the span current
    /// when it is made, and an inner one takes the span current at its
    /// first poll (as sqlx's statement stream makes the connection's); each
    /// item gives the two spans its streams hold (and enter on every poll).
    fn captured() -> Pin<Box<dyn Stream<Item = Held> + Send>> {
        let outer = tracing::Span::current();
        Box::pin(
            futures::stream::once(async { tracing::Span::current() }).flat_map(move |inner| {
                let outer = outer.id();
                futures::stream::iter((0..3).map(move |_| (outer.clone(), inner.id())))
            }),
        )
    }

    #[test]
    fn the_stream_does_not_capture_the_call_span_and_events_keep_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder(seen.clone());
        let subscriber = Dispatch::new(tracing_subscriber::registry().with(recorder));
        // What `rootless()` makes over the server's global dispatcher, here
        // over this test's own.
        let rootless: &'static Dispatch =
            Box::leak(Box::new(Dispatch::new(Rootless::over(subscriber.clone()))));
        dispatcher::with_default(&subscriber, || {
            let call = tracing::info_span!("rpc");
            let _entered = call.enter();
            let call_id = call.id();
            // Made as sqlx makes it, plainly: it holds the call's span.
            let plain: Vec<_> = futures::executor::block_on(captured().collect());
            assert_eq!(plain, vec![(call_id.clone(), call_id.clone()); 3]);
            // Made and started through Unspanned: neither holds a span.
            let unspanned: Vec<_> =
                futures::executor::block_on(Unspanned::over(rootless, captured).collect());
            assert_eq!(unspanned, vec![(None, None); 3]);
            // An event while it is made still lands in the call's span.
            let _ = Unspanned::over(rootless, || {
                tracing::info!("a notice");
                futures::stream::empty::<()>()
            });
        });
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.as_slice(), ["a notice in rpc"]);
    }

    /// Records each event's message with the name of its span.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl<S> tracing_subscriber::Layer<S> for Recorder
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_event(&self, event: &Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            let span = ctx
                .event_span(event)
                .map_or_else(|| "no span".to_owned(), |s| s.name().to_owned());
            if let Ok(mut seen) = self.0.lock() {
                seen.push(format!("{} in {span}", message.0));
            }
        }
    }
}
