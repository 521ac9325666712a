//! The payload of one spilled record: a [`Record`]'s key fields and its JSON,
//! in a small length-prefixed binary form (version byte, eleven strings,
//! the schema version, then the JSON to the end).

use event_collector_exporters::{Record, RecordFields};

const VERSION: u8 = 1;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown record format version {0}")]
    Version(u8),
    #[error("record ends early")]
    Short,
    #[error("a key field is not UTF-8")]
    Utf8,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a record for the spill.
pub fn encode(rec: &Record) -> Vec<u8> {
    let f = &rec.fields;
    let strs: [&str; 11] = [
        &f.cluster,
        &f.api,
        &f.uid,
        &f.resource_version,
        &f.namespace,
        &f.name,
        &f.event_type,
        &f.reason,
        &f.kind,
        &f.object_uid,
        &f.timestamp,
    ];
    let len = 1 + 4 + strs.iter().map(|s| 4 + s.len()).sum::<usize>() + rec.json.len();
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    for s in strs {
        put_str(&mut out, s);
    }
    out.extend_from_slice(&f.schema_version.to_le_bytes());
    out.extend_from_slice(&rec.json);
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Short);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader(payload);
    let v = r.take(1)?[0];
    if v != VERSION {
        return Err(DecodeError::Version(v));
    }
    let mut s = || r.string();
    let fields = RecordFields {
        cluster: s()?.into(),
        api: s()?.into(),
        uid: s()?,
        resource_version: s()?,
        namespace: s()?,
        name: s()?,
        event_type: s()?,
        reason: s()?,
        kind: s()?,
        object_uid: s()?,
        timestamp: s()?,
        schema_version: 0,
    };
    let schema_version = r.u32()?;
    Ok(Record::new(
        RecordFields {
            schema_version,
            ..fields
        },
        bytes::Bytes::copy_from_slice(r.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rec = Record::new(
            RecordFields {
                cluster: "c".into(),
                api: "core/v1".into(),
                uid: "u-1".into(),
                resource_version: "42".into(),
                namespace: "ns".into(),
                name: "n".into(),
                event_type: "Warning".into(),
                reason: "BackOff".into(),
                kind: "Pod".into(),
                object_uid: "o".into(),
                schema_version: 1,
                timestamp: "2024-01-01T00:00:00Z".into(),
            },
            br#"{"uid":"u-1","message":"h\u00e9"}"#.to_vec(),
        );
        let back = decode(&encode(&rec)).unwrap();
        assert_eq!(back.fields, rec.fields);
        assert_eq!(back.json, rec.json);
        assert_eq!(decode(&encode(&rec)[..10]).unwrap_err(), DecodeError::Short);
        assert_eq!(decode(&[9, 0]).unwrap_err(), DecodeError::Version(9));
    }
}
