//! Bodies of the fuzz targets under `fuzz/`, kept here so ordinary tests replay the corpus on
//! stable Rust. Each body panics only when an invariant of the codec is broken.

use bytes::Bytes;

use crate::{DatagramDecoder, FrameLimits, StreamDecoder, encode};

/// Feeds `data` to a [`StreamDecoder`] in chunks whose sizes come from the first byte (its high
/// bit: as shared `Bytes` rather than slices), checking that every frame that comes out
/// re-encodes to a package that decodes to the same frame, and that a failed stream stays
/// failed.
pub fn stream_decoder(data: &[u8]) {
    let Some((&chunk_seed, input)) = data.split_first() else {
        return;
    };
    let limits = FrameLimits {
        max_frame_length: 64 * 1024,
    };
    let chunk = usize::from(chunk_seed % 17) + 1;
    // The high bit of the seed feeds the pieces as shared `Bytes` instead of slices.
    let shared = chunk_seed & 0x80 != 0;
    let input_bytes = Bytes::copy_from_slice(input);
    let mut decoder = StreamDecoder::new(limits);
    for (i, piece) in input.chunks(chunk).enumerate() {
        if shared {
            let start = i * chunk;
            decoder.feed_bytes(input_bytes.slice(start..start + piece.len()));
        } else {
            decoder.feed(piece);
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let mut wire = Vec::new();
                    let written =
                        encode(&frame, &limits, &mut wire).expect("decoded frame re-encodes");
                    assert_eq!(written, wire.len());
                    let mut again = StreamDecoder::new(limits);
                    again.feed(&wire);
                    let back = again.next_frame().expect("re-encoded frame decodes");
                    assert_eq!(back.as_ref(), Some(&frame));
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(decoder.is_failed());
                    assert!(
                        decoder.next_frame().is_err(),
                        "a failed stream stays failed"
                    );
                    return;
                }
            }
        }
        assert!(decoder.buffered_len() <= limits.max_package_len() + chunk);
    }
}

/// Decodes `data` as one datagram; every package that comes out must decode or fail cleanly.
pub fn datagram_decoder(data: &[u8]) {
    let limits = FrameLimits {
        max_frame_length: 64 * 1024,
    };
    let datagram = Bytes::copy_from_slice(data);
    let mut total = 0;
    for package in DatagramDecoder::new(datagram, limits) {
        match package {
            Ok(package) => {
                total += package.wire_len;
                assert!(total <= data.len());
                let _ = package.decode();
            }
            Err(_) => break,
        }
    }
}

/// Files of `<fuzz_dir>/<kind>/<target>/` (`kind` is `corpus` or `regressions`), sorted; none
/// when the folder does not exist.
pub fn corpus_files(
    fuzz_dir: &std::path::Path,
    kind: &str,
    target: &str,
) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir.join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Replays a target's corpus and regressions through `body` on stable Rust, for ordinary tests:
/// panics if the corpus folder is empty (it was moved) or if `body` panics on any file.
pub fn replay_corpus(fuzz_dir: &std::path::Path, target: &str, body: fn(&[u8])) {
    let corpus = corpus_files(fuzz_dir, "corpus", target);
    assert!(
        !corpus.is_empty(),
        "no corpus files in {}/corpus/{target}: was the folder moved?",
        fuzz_dir.display()
    );
    for path in corpus
        .iter()
        .chain(&corpus_files(fuzz_dir, "regressions", target))
    {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target} panicked on {}", path.display());
    }
}

/// A xorshift64 generator for the corpus mutation tests of every crate: the same sequence from
/// the same seed on every platform, with no dependency. Not for anything but tests.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next 64 pseudo-random bits (the state must not start at 0).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
