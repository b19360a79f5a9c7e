//! A minimal, bounded reader for the zip files wheels are: the end-of-central-directory
//! record, the central directory, and one local header and its data per entry asked for.
//! Stored and deflate entries only; no zip64, no encryption, no multi-disk archives. Every
//! offset and length is checked against the buffer before it is used, an entry's declared
//! size is checked against the caller's cap before anything is inflated, and the inflated
//! bytes are checked against the declared size and CRC-32.

/// Why a zip file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZipError {
    /// No end-of-central-directory record: not a zip file, or truncated.
    #[error("no end-of-central-directory record (not a zip file, or truncated)")]
    NoEndRecord,
    /// A structure points outside the file or has a bad signature.
    #[error("corrupt zip structure: {0}")]
    Corrupt(&'static str),
    /// A feature this reader does not support (zip64, encryption, multiple disks, a
    /// compression method other than stored and deflate).
    #[error("unsupported zip feature: {0}")]
    Unsupported(&'static str),
    /// Two entries with the same name: which one a reader takes is ambiguous, so none is.
    #[error("the entry {0:?} appears more than once")]
    DuplicateEntry(String),
    /// More entries than the reader accepts.
    #[error("more than {0} entries")]
    TooManyEntries(usize),
    /// An entry larger than the caller's cap.
    #[error("the entry {name:?} is {size} bytes, more than the limit of {limit}")]
    EntryTooLarge {
        /// The entry.
        name: String,
        /// Its declared uncompressed size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// An entry's data does not inflate to what the directory declares.
    #[error("the entry {name:?} is corrupt: {reason}")]
    BadEntry {
        /// The entry.
        name: String,
        /// What did not match.
        reason: &'static str,
    },
}

const END_SIGNATURE: u32 = 0x0605_4b50;
const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
const END_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
/// The end record's comment is at most 65,535 bytes, so the record starts within this many
/// bytes of the end.
const END_SEARCH: usize = END_LEN + u16::MAX as usize;
/// Far more than any wheel we read has; a bound on the work a hostile directory can cause.
pub const MAX_ENTRIES: usize = 65_535;

/// One entry of the central directory.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    method: u16,
    crc32: u32,
    compressed_size: u64,
    size: u64,
    local_offset: u64,
}

/// A zip file in memory, its central directory read and checked.
#[derive(Debug)]
pub struct ZipArchive<'a> {
    bytes: &'a [u8],
    entries: Vec<Entry>,
}

impl<'a> ZipArchive<'a> {
    /// Reads the end record and the central directory of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Result<ZipArchive<'a>, ZipError> {
        let end = find_end(bytes)?;
        let r = Reader(&bytes[end..]);
        if r.u16(4)? != 0 || r.u16(6)? != 0 {
            return Err(ZipError::Unsupported("multi-disk archive"));
        }
        let on_disk = r.u16(8)?;
        let count = r.u16(10)?;
        let dir_size = r.u32(12)?;
        let dir_offset = r.u32(16)?;
        if count == u16::MAX || dir_size == u32::MAX || dir_offset == u32::MAX {
            return Err(ZipError::Unsupported("zip64"));
        }
        if on_disk != count {
            return Err(ZipError::Unsupported("multi-disk archive"));
        }
        let (dir_offset, dir_size) = (dir_offset as usize, dir_size as usize);
        let dir_end = dir_offset
            .checked_add(dir_size)
            .filter(|&e| e <= end)
            .ok_or(ZipError::Corrupt(
                "the central directory lies outside the file",
            ))?;
        let directory = &bytes[dir_offset..dir_end];

        let mut entries: Vec<Entry> = Vec::with_capacity(usize::from(count).min(1024));
        let mut at = 0usize;
        for _ in 0..count {
            if entries.len() >= MAX_ENTRIES {
                return Err(ZipError::TooManyEntries(MAX_ENTRIES));
            }
            let r = Reader(directory.get(at..).unwrap_or_default());
            if r.u32(0)? != CENTRAL_SIGNATURE {
                return Err(ZipError::Corrupt("bad central directory signature"));
            }
            let flags = r.u16(8)?;
            if flags & 0x0001 != 0 || flags & 0x0040 != 0 {
                return Err(ZipError::Unsupported("encrypted entry"));
            }
            let name_len = usize::from(r.u16(28)?);
            let extra_len = usize::from(r.u16(30)?);
            let comment_len = usize::from(r.u16(32)?);
            let compressed_size = r.u32(20)?;
            let size = r.u32(24)?;
            let local_offset = r.u32(42)?;
            if compressed_size == u32::MAX || size == u32::MAX || local_offset == u32::MAX {
                return Err(ZipError::Unsupported("zip64"));
            }
            let name = r.slice(CENTRAL_LEN, name_len)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| ZipError::Corrupt("an entry name is not UTF-8"))?;
            if entries.iter().any(|e| e.name == name) {
                return Err(ZipError::DuplicateEntry(name));
            }
            entries.push(Entry {
                name,
                method: r.u16(10)?,
                crc32: r.u32(16)?,
                compressed_size: u64::from(compressed_size),
                size: u64::from(size),
                local_offset: u64::from(local_offset),
            });
            at = CENTRAL_LEN
                .checked_add(name_len + extra_len + comment_len)
                .and_then(|len| at.checked_add(len))
                .filter(|&next| next <= directory.len())
                .ok_or(ZipError::Corrupt(
                    "a central directory entry runs past its end",
                ))?;
        }
        Ok(ZipArchive { bytes, entries })
    }

    /// The names of the entries, in directory order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The contents of the entry `name`, or `None` when there is no such entry. Refuses an
    /// entry whose declared size is over `limit` before inflating it.
    pub fn read(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, ZipError> {
        let Some(entry) = self.entries.iter().find(|e| e.name == name) else {
            return Ok(None);
        };
        if entry.size > limit {
            return Err(ZipError::EntryTooLarge {
                name: entry.name.clone(),
                size: entry.size,
                limit,
            });
        }
        let bad = |reason| ZipError::BadEntry {
            name: entry.name.clone(),
            reason,
        };
        let local = usize::try_from(entry.local_offset)
            .ok()
            .and_then(|o| self.bytes.get(o..))
            .ok_or(bad("its local header lies outside the file"))?;
        let r = Reader(local);
        if r.u32(0)? != LOCAL_SIGNATURE {
            return Err(bad("bad local header signature"));
        }
        let data_start = LOCAL_LEN + usize::from(r.u16(26)?) + usize::from(r.u16(28)?);
        let data = usize::try_from(entry.compressed_size)
            .ok()
            .and_then(|len| r.slice(data_start, len).ok())
            .ok_or(bad("its data runs past the end of the file"))?;
        // `size <= limit` was checked above, and limits are far below `usize::MAX`.
        let size = usize::try_from(entry.size).map_err(|_| bad("its size does not fit"))?;
        let contents = match entry.method {
            0 if data.len() == size => data.to_vec(),
            0 => return Err(bad("a stored entry whose sizes differ")),
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(data, size)
                .map_err(|_| bad("its deflate stream is invalid or longer than declared"))?,
            _ => {
                return Err(ZipError::Unsupported(
                    "a compression method other than stored or deflate",
                ));
            }
        };
        if contents.len() != size {
            return Err(bad("it inflates to a size other than the declared one"));
        }
        if crc32fast::hash(&contents) != entry.crc32 {
            return Err(bad("CRC-32 mismatch"));
        }
        Ok(Some(contents))
    }
}

/// The offset of the end-of-central-directory record: the last signature, searching back
/// from the end, whose comment length reaches exactly the end of the file.
fn find_end(bytes: &[u8]) -> Result<usize, ZipError> {
    if bytes.len() < END_LEN {
        return Err(ZipError::NoEndRecord);
    }
    let lowest = bytes.len().saturating_sub(END_SEARCH);
    (lowest..=bytes.len() - END_LEN)
        .rev()
        .find(|&at| {
            let r = Reader(&bytes[at..]);
            r.u32(0) == Ok(END_SIGNATURE)
                && r.u16(20)
                    .is_ok_and(|c| at + END_LEN + usize::from(c) == bytes.len())
        })
        .ok_or(ZipError::NoEndRecord)
}

/// Little-endian reads that fail instead of panicking past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], ZipError> {
        at.checked_add(len)
            .and_then(|end| self.0.get(at..end))
            .ok_or(ZipError::Corrupt("a field runs past the end of the file"))
    }

    fn u16(&self, at: usize) -> Result<u16, ZipError> {
        let b = self.slice(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, at: usize) -> Result<u32, ZipError> {
        let b = self.slice(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Writes zip files for tests: stored or deflated entries, nothing else.
#[cfg(test)]
pub(crate) mod testing {
    /// A zip file holding `entries` (name, contents, deflate?).
    pub fn zip(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut directory = Vec::new();
        for (name, contents, deflate) in entries {
            let data = if *deflate {
                miniz_oxide::deflate::compress_to_vec(contents, 6)
            } else {
                contents.to_vec()
            };
            let method: u16 = if *deflate { 8 } else { 0 };
            let crc = crc32fast::hash(contents);
            let offset = out.len() as u32;
            out.extend(0x0403_4b50u32.to_le_bytes());
            out.extend(20u16.to_le_bytes()); // version needed
            out.extend(0u16.to_le_bytes()); // flags
            out.extend(method.to_le_bytes());
            out.extend([0u8; 4]); // time, date
            out.extend(crc.to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((contents.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes()); // extra
            out.extend(name.as_bytes());
            out.extend(&data);

            directory.extend(0x0201_4b50u32.to_le_bytes());
            directory.extend(20u16.to_le_bytes()); // made by
            directory.extend(20u16.to_le_bytes()); // needed
            directory.extend(0u16.to_le_bytes());
            directory.extend(method.to_le_bytes());
            directory.extend([0u8; 4]);
            directory.extend(crc.to_le_bytes());
            directory.extend((data.len() as u32).to_le_bytes());
            directory.extend((contents.len() as u32).to_le_bytes());
            directory.extend((name.len() as u16).to_le_bytes());
            directory.extend([0u8; 2 + 2 + 2 + 2 + 4]); // extra, comment, disk, attributes
            directory.extend(offset.to_le_bytes());
            directory.extend(name.as_bytes());
        }
        let dir_offset = out.len() as u32;
        out.extend(&directory);
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend([0u8; 4]); // disks
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((directory.len() as u32).to_le_bytes());
        out.extend(dir_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes()); // comment
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::zip;
    use super::*;

    fn sample() -> Vec<u8> {
        let big: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        zip(&[
            ("a.txt", b"stored", false),
            ("bin/python.wasm", &big, true),
            ("empty", b"", true),
        ])
    }

    #[test]
    fn reads_stored_and_deflated_entries() {
        let bytes = sample();
        let archive = ZipArchive::new(&bytes).unwrap();
        assert_eq!(
            archive.names().collect::<Vec<_>>(),
            ["a.txt", "bin/python.wasm", "empty"]
        );
        assert_eq!(archive.read("a.txt", 100).unwrap().unwrap(), b"stored");
        let big = archive.read("bin/python.wasm", 1 << 20).unwrap().unwrap();
        assert_eq!(big.len(), 400_000);
        assert_eq!(&big[4..8], &1u32.to_le_bytes());
        assert_eq!(archive.read("empty", 0).unwrap().unwrap(), b"");
        assert_eq!(archive.read("missing", 100).unwrap(), None);
    }

    #[test]
    fn refuses_an_entry_over_the_cap_before_inflating() {
        let bytes = sample();
        let archive = ZipArchive::new(&bytes).unwrap();
        assert!(matches!(
            archive.read("bin/python.wasm", 399_999),
            Err(ZipError::EntryTooLarge { size: 400_000, .. })
        ));
    }

    #[test]
    fn refuses_truncated_files_at_every_length() {
        let bytes = sample();
        // Cutting the file anywhere loses the end record (it is at the very end), and every
        // prefix must be refused without a panic.
        for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
            assert!(ZipArchive::new(&bytes[..len]).is_err(), "length {len}");
        }
        assert_eq!(ZipArchive::new(b"").unwrap_err(), ZipError::NoEndRecord);
        assert_eq!(
            ZipArchive::new(b"this is not a zip file at all, not at all").unwrap_err(),
            ZipError::NoEndRecord
        );
    }

    #[test]
    fn corrupted_bytes_never_panic_and_corrupt_data_is_caught() {
        let bytes = sample();
        // Flip each byte in turn (a stride keeps it quick): reading every entry either
        // succeeds with the original contents or fails with an error, never a panic.
        let original = ZipArchive::new(&bytes).unwrap();
        let expected: Vec<Vec<u8>> = original
            .names()
            .map(|n| original.read(n, 1 << 20).unwrap().unwrap())
            .collect();
        let mut caught = 0;
        for at in (0..bytes.len()).step_by(13) {
            let mut copy = bytes.clone();
            copy[at] ^= 0x5a;
            let Ok(archive) = ZipArchive::new(&copy) else {
                caught += 1;
                continue;
            };
            for (name, want) in ["a.txt", "bin/python.wasm", "empty"].iter().zip(&expected) {
                match archive.read(name, 1 << 20) {
                    Ok(Some(got)) => assert_eq!(&got, want, "byte {at} changed {name}"),
                    Ok(None) | Err(_) => caught += 1,
                }
            }
        }
        assert!(caught > 0);

        // A change inside the deflated data is caught (by inflating or by the CRC).
        let archive = ZipArchive::new(&bytes).unwrap();
        let entry = &archive.entries[1];
        let data_at = entry.local_offset as usize + LOCAL_LEN + entry.name.len() + 100;
        let mut copy = bytes.clone();
        copy[data_at] ^= 0x01;
        let archive = ZipArchive::new(&copy).unwrap();
        assert!(matches!(
            archive.read("bin/python.wasm", 1 << 20),
            Err(ZipError::BadEntry { .. })
        ));
    }

    #[test]
    fn refuses_duplicate_names_and_unsupported_features() {
        let bytes = zip(&[("x", b"1", false), ("x", b"2", false)]);
        assert_eq!(
            ZipArchive::new(&bytes).unwrap_err(),
            ZipError::DuplicateEntry("x".into())
        );

        // The encryption flag in the central directory.
        let mut bytes = zip(&[("x", b"1", false)]);
        let dir = bytes.len() - END_LEN - CENTRAL_LEN - 1;
        bytes[dir + 8] |= 1;
        assert_eq!(
            ZipArchive::new(&bytes).unwrap_err(),
            ZipError::Unsupported("encrypted entry")
        );

        // A compression method other than stored or deflate (here 12, bzip2).
        let mut bytes = zip(&[("x", b"1", false)]);
        let dir = bytes.len() - END_LEN - CENTRAL_LEN - 1;
        bytes[dir + 10] = 12;
        let archive = ZipArchive::new(&bytes).unwrap();
        assert!(matches!(
            archive.read("x", 10),
            Err(ZipError::Unsupported(_))
        ));
    }
}
