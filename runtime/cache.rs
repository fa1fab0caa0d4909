//! Files fdpp keeps in its cache folder (`$FDPP_CACHE`, see `model::hub::cache_dir`) that it
//! writes itself: compiled kernels, the tuner's device profiles, calibrations. Each is text
//! behind one line holding the SHA-256 of that text, written aside and renamed, so a reader
//! never takes a torn or corrupted file for a valid one.

use std::path::Path;

use sha2::{Digest, Sha256};

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `text`, in hex.
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// What reading a checked file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Missing,
    /// Present, but its text does not match its checksum (or it has no checksum line).
    Corrupt,
    Valid(String),
}

pub fn read_checked(path: &Path) -> Entry {
    let Ok(bytes) = std::fs::read(path) else { return Entry::Missing };
    let Ok(bytes) = String::from_utf8(bytes) else { return Entry::Corrupt };
    match bytes.split_once('\n') {
        Some((sum, text)) if sha256_hex(text) == sum => Entry::Valid(text.to_string()),
        _ => Entry::Corrupt,
    }
}

pub fn write_checked(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n{text}", sha256_hex(text)))?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked() {
        let dir = std::env::temp_dir().join(format!("fdpp-cache-entry-{}", std::process::id()));
        let path = dir.join("sub/x.txt");
        assert_eq!(read_checked(&path), Entry::Missing);
        write_checked(&path, ".version 8.0\n// kernels").unwrap();
        assert_eq!(read_checked(&path), Entry::Valid(".version 8.0\n// kernels".into()));
        // A flipped byte in the body: the entry no longer matches its checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_checked(&path), Entry::Corrupt);
        std::fs::write(&path, "no newline at all").unwrap();
        assert_eq!(read_checked(&path), Entry::Corrupt);
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        assert_eq!(read_checked(&path), Entry::Corrupt);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
