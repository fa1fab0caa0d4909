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
pub enum Entry<T = String> {
    Missing,
    /// Present, but its contents do not match its checksum (or it has no checksum line).
    Corrupt,
    Valid(T),
}

pub fn read_checked(path: &Path) -> Entry {
    match read_checked_bytes(path) {
        Entry::Valid(bytes) => String::from_utf8(bytes).map_or(Entry::Corrupt, Entry::Valid),
        Entry::Missing => Entry::Missing,
        Entry::Corrupt => Entry::Corrupt,
    }
}

/// `read_checked` for binary contents (compiled GPU code objects).
pub fn read_checked_bytes(path: &Path) -> Entry<Vec<u8>> {
    let Ok(mut bytes) = std::fs::read(path) else { return Entry::Missing };
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else { return Entry::Corrupt };
    let body = bytes.split_off(newline + 1);
    if bytes[..newline] == *hex(&Sha256::digest(&body)).as_bytes() { Entry::Valid(body) } else { Entry::Corrupt }
}

pub fn write_checked(path: &Path, text: &str) -> std::io::Result<()> {
    write_checked_bytes(path, text.as_bytes())
}

pub fn write_checked_bytes(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = hex(&Sha256::digest(contents)).into_bytes();
    file.push(b'\n');
    file.extend_from_slice(contents);
    std::fs::write(&tmp, file)?;
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
        // Binary contents (a code object) round-trip, and are checked the same way.
        let object = [0x7f, b'E', b'L', b'F', 0, b'\n', 0xff];
        write_checked_bytes(&path, &object).unwrap();
        assert_eq!(read_checked_bytes(&path), Entry::Valid(object.to_vec()));
        assert_eq!(read_checked(&path), Entry::Corrupt, "not text");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[70] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(read_checked_bytes(&path), Entry::Corrupt);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
