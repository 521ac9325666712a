//! The stdout exporter: each record as one JSON line on standard output (or,
//! with `pretty = true`, indented over several lines, for humans).
//!
//! A batch is written with one `write_all` of one buffer on the locked
//! stdout, then flushed, on a blocking thread (a slow reader of the pipe
//! must not stall the async executor). Lines of concurrent writers to stdout
//! (such as logs, which belong on stderr anyway) never interleave within a
//! batch. Delivery is at-least-once: if a write fails part-way (the reader
//! went away), the error is transient and the pipeline resends the batch,
//! so some lines may appear twice. `health` is `NotReady` from a failure
//! until the next successful write.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::Deserialize;

use crate::volume::append_json_line;
use crate::{Batch, ConfigError, ExportError, Exporter, Health, Record};

/// The `stdout` exporter's keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Indent each record over several lines (2 spaces, key order kept) for
    /// humans; the output is then no longer JSON Lines. Default `false`: one
    /// compact JSON object per line.
    #[serde(default)]
    pub pretty: bool,
}

impl StdoutConfig {
    /// Checks the settings; nothing can be invalid yet.
    pub fn validate(&self, _name: &str) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Builds the exporter named `name`.
    pub fn build(&self, name: &str) -> Result<StdoutExporter, ConfigError> {
        Ok(StdoutExporter::with_writer(name, self.pretty, Box::new(io::stdout())))
    }
}

struct Out {
    writer: Box<dyn Write + Send>,
    /// One batch, reused.
    buf: Vec<u8>,
}

struct Shared {
    name: String,
    pretty: bool,
    out: Mutex<Out>,
    /// `Some(message)` while not ready.
    health: Mutex<Option<String>>,
}

/// Writes batches to stdout; see the module doc.
pub struct StdoutExporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StdoutExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutExporter")
            .field("name", &self.shared.name)
            .field("pretty", &self.shared.pretty)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StdoutExporter {
    /// The exporter, writing to `writer` instead of stdout.
    fn with_writer(name: &str, pretty: bool, writer: Box<dyn Write + Send>) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.to_string(),
                pretty,
                out: Mutex::new(Out {
                    writer,
                    buf: Vec::new(),
                }),
                health: Mutex::new(None),
            }),
        }
    }
}

impl Shared {
    fn write(&self, batch: &[Arc<Record>]) -> Result<(), ExportError> {
        let mut out = lock(&self.out);
        let Out { writer, buf } = &mut *out;
        buf.clear();
        for r in batch {
            if self.pretty {
                pretty_json(buf, &r.json);
                buf.push(b'\n');
            } else {
                append_json_line(buf, &r.json);
            }
        }
        let result = writer.write_all(buf).and_then(|()| writer.flush());
        if buf.capacity() > 16 << 20 {
            *buf = Vec::new();
        }
        drop(out);
        let mut health = lock(&self.health);
        match result {
            Ok(()) => {
                if health.take().is_some() {
                    tracing::info!(exporter = %self.name, "stdout exporter recovered: writes succeed again");
                }
                Ok(())
            }
            Err(e) => {
                let message = format!("stdout exporter `{}`: cannot write to stdout: {e}", self.name);
                if health.is_none() {
                    tracing::warn!(exporter = %self.name, error = %e, "stdout exporter cannot write");
                }
                *health = Some(message.clone());
                Err(ExportError::transient("io", message))
            }
        }
    }
}

/// Appends `json` indented like `serde_json`'s pretty printer (2 spaces,
/// `"key": value`), without parsing it, so key order and numbers stay exactly
/// as they were. Whitespace outside strings is dropped and re-made.
fn pretty_json(out: &mut Vec<u8>, json: &[u8]) {
    fn newline(out: &mut Vec<u8>, depth: usize) {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
    let is_ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < json.len() {
        let c = json[i];
        i += 1;
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                // An empty object or array stays on one line: `{}`, `[]`.
                let mut j = i;
                while j < json.len() && is_ws(json[j]) {
                    j += 1;
                }
                if j < json.len() && matches!(json[j], b'}' | b']') {
                    out.push(json[j]);
                    i = j + 1;
                } else {
                    depth += 1;
                    newline(out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            c if is_ws(c) => {}
            c => out.push(c),
        }
    }
}

#[async_trait]
impl Exporter for StdoutExporter {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn export(&self, batch: &Batch) -> Result<(), ExportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let records = batch.to_vec();
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.write(&records))
            .await
            .unwrap_or_else(|e| {
                Err(ExportError::transient(
                    "io",
                    format!("stdout exporter `{}`: writer task failed: {e}", self.shared.name),
                ))
            })
    }

    async fn flush(&self) -> Result<(), ExportError> {
        let shared = Arc::clone(&self.shared);
        let result = tokio::task::spawn_blocking(move || lock(&shared.out).writer.flush()).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ExportError::transient(
                "io",
                format!("stdout exporter `{}`: cannot flush stdout: {e}", self.shared.name),
            )),
            Err(e) => Err(ExportError::transient(
                "io",
                format!("stdout exporter `{}`: flush task failed: {e}", self.shared.name),
            )),
        }
    }

    fn health(&self) -> Health {
        match &*lock(&self.shared.health) {
            None => Health::Ready,
            Some(message) => Health::NotReady(message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordFields;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A writer into shared memory that can be told to fail.
    #[derive(Clone, Default)]
    struct Sink {
        data: Arc<Mutex<Vec<u8>>>,
        fail: Arc<AtomicBool>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            *self.writes.lock().unwrap() += 1;
            self.data.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn rec(json: &str) -> Arc<Record> {
        Arc::new(Record::new(RecordFields::default(), json.to_string()))
    }

    fn exporter(pretty: bool) -> (StdoutExporter, Sink) {
        let sink = Sink::default();
        (StdoutExporter::with_writer("out", pretty, Box::new(sink.clone())), sink)
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.data.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn writes_one_line_per_record_in_one_write() {
        let (e, sink) = exporter(false);
        assert_eq!(e.name(), "out");
        e.export(&[rec(r#"{"a":1}"#), rec(r#"{"b":"x y"}"#), rec("{\n\"c\":2}")])
            .await
            .unwrap();
        e.export(&[rec(r#"{"d":4}"#)]).await.unwrap();
        e.export(&[]).await.unwrap();
        assert_eq!(text(&sink), "{\"a\":1}\n{\"b\":\"x y\"}\n{ \"c\":2}\n{\"d\":4}\n");
        assert_eq!(*sink.writes.lock().unwrap(), 2, "one write per non-empty batch");
        assert_eq!(e.health(), Health::Ready);
        e.flush().await.unwrap();
    }

    #[tokio::test]
    async fn pretty_output_matches_serde_json_and_keeps_key_order() {
        let (e, sink) = exporter(true);
        let json = r#"{"z":1,"a":{"s":"q\"u{o}t,e:d\\","e":{},"l":[]},"arr":[1,2.50,{"k":null}],"t":true}"#;
        e.export(&[rec(json), rec("[]")]).await.unwrap();
        let out = text(&sink);
        let expected_first = concat!(
            "{\n",
            "  \"z\": 1,\n",
            "  \"a\": {\n",
            "    \"s\": \"q\\\"u{o}t,e:d\\\\\",\n",
            "    \"e\": {},\n",
            "    \"l\": []\n",
            "  },\n",
            "  \"arr\": [\n",
            "    1,\n",
            "    2.50,\n",
            "    {\n",
            "      \"k\": null\n",
            "    }\n",
            "  ],\n",
            "  \"t\": true\n",
            "}\n",
        );
        assert_eq!(out, format!("{expected_first}[]\n"));
        // Same text as serde_json's own pretty printer (on input whose key
        // order and numbers it keeps).
        let plain = r#"{"a":[1,{"b":"c,d"}],"e":{},"f":"x"}"#;
        let mut mine = Vec::new();
        pretty_json(&mut mine, plain.as_bytes());
        let value: serde_json::Value = serde_json::from_str(plain).unwrap();
        assert_eq!(
            String::from_utf8(mine).unwrap(),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }

    #[tokio::test]
    async fn failure_is_transient_and_recovers() {
        let (e, sink) = exporter(false);
        sink.fail.store(true, Ordering::SeqCst);
        let err = e.export(&[rec("{}")]).await.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Transient);
        assert_eq!(err.reason, "io");
        assert!(err.message.contains("stdout"), "{}", err.message);
        match e.health() {
            Health::NotReady(m) => assert_eq!(m, err.message),
            Health::Ready => panic!("should not be ready after a failed write"),
        }
        sink.fail.store(false, Ordering::SeqCst);
        e.export(&[rec("{}")]).await.unwrap();
        assert_eq!(e.health(), Health::Ready);
        assert_eq!(text(&sink), "{}\n");
    }

    #[test]
    fn config_parsing() {
        let c: StdoutConfig = toml::from_str("").unwrap();
        assert!(!c.pretty);
        let c: StdoutConfig = toml::from_str("pretty = true").unwrap();
        assert!(c.pretty);
        let e = toml::from_str::<StdoutConfig>("colour = true").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        assert!(toml::from_str::<StdoutConfig>("pretty = \"yes\"").is_err());
        let built = c.build("console").unwrap();
        assert_eq!(built.name(), "console");
    }
}
