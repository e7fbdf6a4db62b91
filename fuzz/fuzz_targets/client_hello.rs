//! The TLS listener's ClientHello reader on fuzzed bytes, fed in fuzzed pieces: it must never
//! panic, keep every byte fed (the passthrough replay), and give the same answer whatever the
//! split.

#![no_main]

use arbitrary::Arbitrary;
use gatehouse_l4proxy::HelloReader;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    /// Piece lengths (1..=256 each), cycled.
    splits: Vec<u8>,
}

/// `Ok(Some(sni))` when a whole hello was read, `Ok(None)` when more is needed, `Err` when
/// refused; plus the bytes kept.
fn read(bytes: &[u8], splits: &[u8]) -> (Result<Option<Option<String>>, String>, Vec<u8>) {
    let mut reader = HelloReader::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let len = splits.get(i % splits.len().max(1)).map_or(rest.len(), |n| usize::from(*n) + 1);
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        i += 1;
        match reader.push(piece) {
            Ok(Some(accepted)) => {
                let sni = accepted.client_hello().server_name().map(str::to_owned);
                return (Ok(Some(sni)), reader.into_bytes());
            }
            Ok(None) => {}
            Err(e) => return (Err(e.to_string()), reader.into_bytes()),
        }
    }
    (Ok(None), reader.into_bytes())
}

fuzz_target!(|input: Input| {
    let (whole, kept) = read(&input.bytes, &[]);
    assert!(input.bytes.starts_with(&kept), "kept bytes are a prefix of what was fed");
    let (split, _) = read(&input.bytes, &input.splits);
    // A hello found whole is found split too, with the same server name.
    if let Ok(Some(sni)) = &whole {
        assert_eq!(split.as_ref().ok(), Some(&Some(sni.clone())), "{input:?}");
    }
});
