//! The log line formats the daemon and its workers share, and the one place both install
//! their `tracing` subscriber.
//!
//! `text` is tracing-subscriber's readable line (an RFC 3339 UTC time first, so lines
//! from several files merge by sorting). `json` is one object per line for log
//! shippers, with the keys every line has: `time`, `level`, `target`, `lane`, `request`,
//! `message` and `fields` (the event's other fields, and its spans' fields as
//! `span.field`). `lane` and `request` are taken from the event's own fields of those
//! names or from the `lane{id}` / `request{id}` spans, so a shipper can filter on them
//! whichever side logged the line.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The environment variable by which the daemon tells its workers the format.
pub const FORMAT_ENV: &str = "PRQ_LOG_FORMAT";

/// How a log line is written (`[logs] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }

    /// The format a worker was told to use; text when unset or unknown.
    pub fn from_env() -> Self {
        match std::env::var(FORMAT_ENV).as_deref() {
            Ok("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

/// Installs the global subscriber: `filter` decides what is written, `format` how, to
/// `writer`. Colour only for a terminal, and never in JSON.
pub fn install<W>(format: Format, filter: EnvFilter, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        Format::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi),
            )
            .init(),
        Format::Json => registry
            .with(SpanFields)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .event_format(JsonLines),
            )
            .init(),
    }
}

/// Keeps each span's fields as JSON values in the span's extensions, for [`JsonLines`]
/// (the fmt layer keeps them only as formatted text).
struct SpanFields;

/// A span's fields, as recorded.
struct Recorded(Map<String, Value>);

impl<S> Layer<S> for SpanFields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Collect::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(Recorded(fields.0));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(Recorded(map)) = ext.get_mut::<Recorded>() {
            let mut fields = Collect(std::mem::take(map));
            values.record(&mut fields);
            *map = fields.0;
        }
    }
}

/// Field values as JSON: numbers and booleans as themselves, the rest as text.
#[derive(Default)]
struct Collect(Map<String, Value>);

impl Visit for Collect {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// One JSON object per event; see the module doc for its keys.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::new();
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut event_fields = Collect::default();
        event.record(&mut event_fields);
        let mut fields = event_fields.0;
        let message = fields.remove("message").unwrap_or(Value::Null);
        let mut lane = fields.remove("lane");
        let mut request = fields.remove("request");
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(Recorded(span_fields)) = ext.get::<Recorded>() else {
                    continue;
                };
                for (key, value) in span_fields {
                    match (span.name(), key.as_str()) {
                        ("lane", "id") if lane.is_none() => lane = Some(value.clone()),
                        ("request", "id") if request.is_none() => request = Some(value.clone()),
                        (name, key) => {
                            fields.insert(format!("{name}.{key}"), value.clone());
                        }
                    }
                }
            }
        }
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("time".into(), time.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        line.insert("lane".into(), lane.unwrap_or(Value::Null));
        line.insert("request".into(), request.unwrap_or(Value::Null));
        line.insert("message".into(), message);
        line.insert("fields".into(), Value::Object(fields));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn json_lines(log: impl FnOnce()) -> Vec<Value> {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(SpanFields).with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || out.clone())
                .event_format(JsonLines),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_json_line_names_lane_and_request_from_its_spans() {
        let lines = json_lines(|| {
            let lane = tracing::info_span!("lane", id = "sandbox#1");
            let _l = lane.enter();
            let request = tracing::info_span!("request", id = 42u64);
            let _r = request.enter();
            tracing::warn!(tokens = 3, "stream ended");
        });
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["lane"], "sandbox#1");
        assert_eq!(line["request"], 42);
        assert_eq!(line["message"], "stream ended");
        assert_eq!(line["fields"]["tokens"], 3);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line["target"].as_str().unwrap().contains("log_format"));
    }

    #[test]
    fn a_json_line_takes_lane_and_request_from_its_own_fields() {
        let lines = json_lines(|| tracing::info!(request = 7u64, lane = "glm#2", "cancelled"));
        assert_eq!(lines[0]["request"], 7);
        assert_eq!(lines[0]["lane"], "glm#2");
        assert_eq!(lines[0]["fields"], serde_json::json!({}));
        let lines = json_lines(|| tracing::info!("daemon up"));
        assert_eq!(lines[0]["lane"], Value::Null);
        assert_eq!(lines[0]["request"], Value::Null);
    }
}
