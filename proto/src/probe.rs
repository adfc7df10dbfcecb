//! The probe file: the small "dummy file" a member's server serves and the
//! resolver fetches to measure the whole response time along its path.
//!
//! It carries the TUFR the agent measured most recently, so each probe pairs
//! a path-dependent response time with the server-side time it contains.
//! Optional padding makes the file as large as the operator wants probes to
//! be (larger files weigh bandwidth more in the response time).

use serde::{Deserialize, Serialize};

use crate::push::{MAX_TUFR_MS, ServerState, is_milliseconds};

/// Largest probe file a prober reads; anything longer is refused.
pub const MAX_PROBE_BYTES: usize = 256 * 1024;

/// The probe file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeFile {
    /// The member's identity, `address:port`.
    pub server: String,
    /// Up, down or draining, as in the latest push.
    pub state: ServerState,
    /// Smoothed time until first read in milliseconds; `None` unless up.
    pub tufr_ms: Option<f64>,
    /// The sequence number of the measurement (as in pushes).
    pub seq: u64,
    /// When the file was written, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Filler that brings the file to its configured size.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pad: String,
}

/// Why a fetched body is not a usable probe file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeFileError {
    /// Larger than [`MAX_PROBE_BYTES`].
    #[error("probe file of {0} bytes exceeds the {MAX_PROBE_BYTES}-byte cap")]
    TooLarge(usize),
    /// Not the JSON of a [`ProbeFile`].
    #[error("malformed probe file: {0}")]
    Malformed(String),
    /// TUFR not finite or out of range.
    #[error("tufr_ms {0} is not a finite number in 0..={MAX_TUFR_MS}")]
    TufrOutOfRange(f64),
}

impl ProbeFile {
    /// Serialises, padded with `x` so the result is at least `size` bytes.
    pub fn to_json(&self, size: usize) -> Vec<u8> {
        let bare = serde_json::to_vec(self).unwrap_or_default();
        if bare.len() >= size {
            return bare;
        }
        // The filler replaces any padding the file has, so measure without it;
        // `,"pad":""` then adds 9 bytes before the filler itself.
        let unpadded = ProbeFile {
            pad: String::new(),
            ..self.clone()
        };
        let unpadded_len = serde_json::to_vec(&unpadded).map_or(bare.len(), |v| v.len());
        let filler = size.saturating_sub(unpadded_len + 9).max(1);
        let padded = ProbeFile {
            pad: "x".repeat(filler),
            ..self.clone()
        };
        serde_json::to_vec(&padded).unwrap_or(bare)
    }

    /// Parses and checks a fetched body.
    pub fn from_json(body: &[u8]) -> Result<ProbeFile, ProbeFileError> {
        if body.len() > MAX_PROBE_BYTES {
            return Err(ProbeFileError::TooLarge(body.len()));
        }
        let file: ProbeFile =
            serde_json::from_slice(body).map_err(|e| ProbeFileError::Malformed(e.to_string()))?;
        if let Some(t) = file.tufr_ms
            && !is_milliseconds(t)
        {
            return Err(ProbeFileError::TufrOutOfRange(t));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ProbeFile {
        ProbeFile {
            server: "127.0.0.1:8080".into(),
            state: ServerState::Up,
            tufr_ms: Some(3.25),
            seq: 42,
            at_ms: 1_700_000_000_000,
            pad: String::new(),
        }
    }

    #[test]
    fn round_trips_with_and_without_padding() {
        let bare = file().to_json(0);
        assert_eq!(ProbeFile::from_json(&bare).unwrap(), file());
        for size in [200, 1024, 10_000] {
            let padded = file().to_json(size);
            assert_eq!(padded.len(), size, "padded to exactly {size}");
            let back = ProbeFile::from_json(&padded).unwrap();
            assert_eq!(back.tufr_ms, Some(3.25));
        }
    }

    #[test]
    fn repadding_a_padded_file_still_reaches_the_size() {
        // Found by the probe_file fuzz target: the old padding was counted
        // as if it stayed, so the result came out short.
        let padded = ProbeFile {
            pad: "y".repeat(300),
            ..file()
        };
        let again = padded.to_json(400);
        assert_eq!(again.len(), 400);
        assert_eq!(padded.to_json(10), padded.to_json(0), "large enough as is");
    }

    #[test]
    fn refuses_garbage_and_giants() {
        assert!(matches!(
            ProbeFile::from_json(b"<html>"),
            Err(ProbeFileError::Malformed(_))
        ));
        let huge = vec![b' '; MAX_PROBE_BYTES + 1];
        assert_eq!(
            ProbeFile::from_json(&huge),
            Err(ProbeFileError::TooLarge(MAX_PROBE_BYTES + 1))
        );
        let neg = br#"{"server":"a:1","state":"up","tufr_ms":-2,"seq":1,"at_ms":1}"#;
        assert_eq!(
            ProbeFile::from_json(neg),
            Err(ProbeFileError::TufrOutOfRange(-2.0))
        );
    }
}
