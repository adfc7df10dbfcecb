//! The probe file a prober fetches from a member.
//!
//! Input: the fetched body.
//!
//! Invariants: parsing never panics; a parsed file serialises back to
//! itself, and padded to any size it is at least that large and still reads
//! back to itself (but for the padding).

#![no_main]

use anycast_fuzz::same_tufr;
use anycast_proto::probe::{MAX_PROBE_BYTES, ProbeFile, ProbeFileError};
use anycast_proto::push::MAX_TUFR_MS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match ProbeFile::from_json(data) {
        Ok(file) => file,
        Err(ProbeFileError::TooLarge(len)) => {
            assert!(len > MAX_PROBE_BYTES);
            return;
        }
        Err(ProbeFileError::TufrOutOfRange(t)) => {
            assert!(!(t.is_finite() && (0.0..=MAX_TUFR_MS).contains(&t)));
            return;
        }
        Err(_) => return,
    };
    if let Some(t) = file.tufr_ms {
        assert!(t.is_finite() && (0.0..=MAX_TUFR_MS).contains(&t));
    }

    let bare = file.to_json(0);
    let again = ProbeFile::from_json(&bare).expect("a serialised probe file parses");
    assert_same(&file, &again);
    assert_eq!(again.pad, file.pad);

    // A size from the input, so every padding length is reached.
    let size = data.len().wrapping_mul(31) % 4096;
    let padded = file.to_json(size);
    assert!(
        padded.len() >= size,
        "padded to {} bytes, asked for {size}",
        padded.len()
    );
    let again = ProbeFile::from_json(&padded).expect("a padded probe file parses");
    assert_same(&file, &again);
    assert!(again.pad == file.pad || again.pad.bytes().all(|b| b == b'x'));
});

/// Equal but for the padding and the TUFR's last bits ([`same_tufr`]).
fn assert_same(a: &ProbeFile, b: &ProbeFile) {
    assert!(
        same_tufr(a.tufr_ms, b.tufr_ms),
        "tufr {:?} became {:?}",
        a.tufr_ms,
        b.tufr_ms
    );
    let strip = |f: &ProbeFile| ProbeFile {
        tufr_ms: None,
        pad: String::new(),
        ..f.clone()
    };
    assert_eq!(strip(a), strip(b));
}
