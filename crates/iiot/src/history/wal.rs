//! Append-only logs of checksummed frames: the write-ahead log of readings not yet in a
//! segment (`wal/`) and the alert log (`alerts/`).
//!
//! A frame is `[length u32 LE][crc32 u32 LE][payload]`. Reading stops at the first frame that
//! is cut short or fails its checksum (a write torn by a crash or a full disk); what follows it
//! is reported as skipped and cut off, so appending continues after the last good frame.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Largest payload accepted when reading (a longer length field is corruption).
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// An open log, appended to.
#[derive(Debug)]
pub(crate) struct Log {
    file: File,
    path: PathBuf,
    /// Bytes of whole frames written.
    len: u64,
}

/// What reading a log found.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// The payloads of the good frames, in order.
    pub frames: Vec<Vec<u8>>,
    /// Bytes after the last good frame (a torn or corrupt tail), cut off.
    pub skipped: u64,
}

impl Log {
    /// Opens `path` for appending, creating it if missing. An existing file is read first:
    /// its good frames are returned and a bad tail is cut off.
    pub(crate) fn open(path: &Path) -> io::Result<(Log, Frames)> {
        let read = if path.exists() {
            read(path)?
        } else {
            Frames::default()
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let len: u64 = read.frames.iter().map(|f| 8 + f.len() as u64).sum();
        if read.skipped > 0 {
            file.set_len(len)?;
        }
        Ok((
            Log {
                file,
                path: path.to_owned(),
                len,
            },
            read,
        ))
    }

    /// Appends one frame (not yet synced). On an error the file is cut back to its last whole
    /// frame, so a failed write leaves nothing half-written to trip the next reader.
    pub(crate) fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        match self.file.write_all(&frame) {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Makes what was appended durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A second handle on the file, to sync it without holding whatever guards the log.
    pub(crate) fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Bytes of whole frames.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads the good frames of `path`.
pub(crate) fn read(path: &Path) -> io::Result<Frames> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = Frames::default();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len).filter(|_| len <= MAX_FRAME) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        out.frames.push(payload.to_vec());
        at += 8 + len;
    }
    out.skipped = (bytes.len() - at) as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_reopening_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.wal");
        {
            let (mut log, read) = Log::open(&path).expect("open");
            assert!(read.frames.is_empty());
            log.append(b"one").expect("append");
            log.append(b"two").expect("append");
            log.sync().expect("sync");
        }
        // A crash in the middle of a third frame.
        let mut f = OpenOptions::new().append(true).open(&path).expect("reopen");
        f.write_all(&[9, 0, 0, 0, 1, 2, 3, 4, b'x']).expect("torn");
        drop(f);
        let (mut log, read) = Log::open(&path).expect("open again");
        assert_eq!(read.frames, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(read.skipped, 9);
        log.append(b"three").expect("append after repair");
        drop(log);
        let read = super::read(&path).expect("read");
        assert_eq!(read.frames.len(), 3);
        assert_eq!(read.skipped, 0);
    }

    #[test]
    fn a_corrupt_frame_ends_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.wal");
        let (mut log, _) = Log::open(&path).expect("open");
        log.append(b"good").expect("append");
        log.append(b"flipped").expect("append");
        log.append(b"after").expect("append");
        drop(log);
        let mut bytes = std::fs::read(&path).expect("bytes");
        bytes[12 + 8 + 2] ^= 0xFF; // inside "flipped"
        std::fs::write(&path, &bytes).expect("write");
        let read = read(&path).expect("read");
        assert_eq!(read.frames, vec![b"good".to_vec()]);
        assert_eq!(read.skipped, (8 + 7 + 8 + 5) as u64);
    }
}
