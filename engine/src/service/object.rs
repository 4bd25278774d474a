//! Object store for the `object` service: named byte objects loaded once at start, plus
//! generated objects, shared read-only by every connection of a worker.
//!
//! **Replication identity.** Every output body byte is identified by `(ObjectId, offset)`:
//! a standby holding the same store reproduces any response byte from the replicated response
//! record alone (DESIGN §4, output commit). File objects get ids `0..n` in name order, so two
//! engines loading the same directory agree on ids; the generated family has one reserved id,
//! [`ObjectId::GENERATED`], because its content does not depend on the object's length.
//!
//! **Generated objects.** `gen/<len>` (HTTP target `/gen/<len>`, decimal, `len ≤ max_gen_bytes`,
//! default 1 GiB) is the prefix of length `len` of one infinite stream whose byte at offset `o`
//! is
//!
//! ```text
//! byte(o) = GEN_PATTERN[o mod 65536] XOR (o / 65536) mod 256
//! ```
//!
//! where `GEN_PATTERN` is 65,536 bytes: the little-endian bytes of the first 8,192 outputs of
//! SplitMix64 seeded with 0 (state += 0x9E3779B97F4A7C15; z = state;
//! z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB; out = z ^ z>>31).
//! A client verifies at memory speed (one 64 KiB table, one xor per byte); the block-number
//! xor makes a body shifted by a multiple of 64 KiB (a lost or duplicated segment run)
//! detectable, which a plain repeated pattern would not. [`gen_byte_range`] computes it.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Identifies an object across engines: file objects `0..n` in name order, or
/// [`ObjectId::GENERATED`].
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ObjectId(pub u32);

impl ObjectId {
    /// The generated stream (`/gen/<len>`); its content is [`gen_byte_range`].
    pub const GENERATED: ObjectId = ObjectId(u32::MAX);
}

/// Length of the generated pattern block.
pub const GEN_BLOCK: usize = 1 << 16;

/// The 64 KiB pattern block of the generated stream (see the module documentation),
/// computed at compile time.
pub static GEN_PATTERN: [u8; GEN_BLOCK] = gen_pattern();

const fn gen_pattern() -> [u8; GEN_BLOCK] {
    let mut out = [0u8; GEN_BLOCK];
    let mut state: u64 = 0;
    let mut i = 0;
    while i < GEN_BLOCK / 8 {
        // SplitMix64 (Steele, Lea, Flood 2014).
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let b = z.to_le_bytes();
        let mut j = 0;
        while j < 8 {
            out[i * 8 + j] = b[j];
            j += 1;
        }
        i += 1;
    }
    out
}

/// Fill `buf` with the generated stream starting at `offset`. Every generated object is a
/// prefix of this stream, so the expected body of `/gen/<len>` is `gen_byte_range(0, &mut
/// [0; len])`.
pub fn gen_byte_range(offset: u64, buf: &mut [u8]) {
    let mut off = offset;
    let mut out = buf;
    while !out.is_empty() {
        let pos = (off % GEN_BLOCK as u64) as usize;
        let n = out.len().min(GEN_BLOCK - pos);
        let key = (off / GEN_BLOCK as u64) as u8;
        let (head, rest) = out.split_at_mut(n);
        for (d, s) in head.iter_mut().zip(&GEN_PATTERN[pos..pos + n]) {
            *d = s ^ key;
        }
        off = off.wrapping_add(n as u64);
        out = rest;
    }
}

/// Limits of the store (from config).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Cap on the summed size of loaded files. Default 1 GiB.
    pub max_total_bytes: u64,
    /// Cap on the length of a generated object. Default 1 GiB.
    pub max_gen_bytes: u64,
    /// Cap on the number of loaded files. Default 100,000.
    pub max_objects: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { max_total_bytes: 1 << 30, max_gen_bytes: 1 << 30, max_objects: 100_000 }
    }
}

/// Why loading the store failed; every variant names the path involved.
#[derive(Debug)]
pub enum StoreError {
    /// The directory could not be listed.
    ReadDir { path: PathBuf, source: io::Error },
    /// A file could not be read (or stat'ed).
    ReadFile { path: PathBuf, source: io::Error },
    /// A file name is not usable as an object name (see [`valid_name`]).
    BadName { path: PathBuf },
    /// Loading this file would exceed `max_total_bytes`.
    TooLarge { path: PathBuf, total: u64, cap: u64 },
    /// More than `max_objects` files.
    TooMany { path: PathBuf, cap: usize },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::ReadDir { path, source } => {
                write!(f, "cannot list object directory {}: {source}", path.display())
            }
            StoreError::ReadFile { path, source } => {
                write!(f, "cannot read object file {}: {source}", path.display())
            }
            StoreError::BadName { path } => write!(
                f,
                "object file name {} is not a valid object name (ASCII letters, digits and -._~ only, \
                 at most {MAX_NAME_LEN} bytes)",
                path.display()
            ),
            StoreError::TooLarge { path, total, cap } => write!(
                f,
                "object file {} brings the store to {total} bytes, over the cap of {cap} bytes",
                path.display()
            ),
            StoreError::TooMany { path, cap } => {
                write!(f, "object directory {} has more than {cap} files", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::ReadDir { source, .. } | StoreError::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Longest object name.
pub const MAX_NAME_LEN: usize = 255;

/// Object names are RFC 3986 *unreserved* characters (`A-Z a-z 0-9 - . _ ~`), so the HTTP
/// target `/<name>` never needs percent-encoding; not empty, not starting with `.`.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name[0] != b'.'
        && name.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
}

#[derive(Clone)]
struct Object {
    name: Arc<str>,
    data: Arc<[u8]>,
}

/// Read-only object store; cheap to clone (objects are reference-counted, held once).
#[derive(Clone)]
pub struct ObjectStore {
    objects: Vec<Object>,
    by_name: HashMap<Arc<str>, u32>,
    cfg: StoreConfig,
    total: u64,
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStore")
            .field("objects", &self.objects.len())
            .field("total_bytes", &self.total)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl ObjectStore {
    /// A store with only generated objects.
    pub fn empty(cfg: StoreConfig) -> Self {
        ObjectStore { objects: Vec::new(), by_name: HashMap::new(), cfg, total: 0 }
    }

    /// Load every regular file of `dir` (not recursive) with default limits.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::load_dir_with(dir, StoreConfig::default())
    }

    /// Load every regular file of `dir` (not recursive). Entries whose name starts with `.`
    /// and subdirectories are skipped; any other file whose name is not a [`valid_name`] is an
    /// error, as is exceeding a cap. Ids are assigned in byte order of names.
    pub fn load_dir_with(dir: impl AsRef<Path>, cfg: StoreConfig) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let rd = |source| StoreError::ReadDir { path: dir.to_path_buf(), source };
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(rd)? {
            let entry = entry.map_err(rd)?;
            let path = entry.path();
            let fname = entry.file_name();
            if fname.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            // Follow symlinks: a directory of links to large files is a normal setup.
            let meta = fs::metadata(&path)
                .map_err(|source| StoreError::ReadFile { path: path.clone(), source })?;
            if meta.is_dir() {
                continue;
            }
            let name = match fname.to_str() {
                Some(n) if valid_name(n.as_bytes()) => n.to_owned(),
                _ => return Err(StoreError::BadName { path }),
            };
            if files.len() == cfg.max_objects {
                return Err(StoreError::TooMany { path: dir.to_path_buf(), cap: cfg.max_objects });
            }
            files.push((name, path));
        }
        files.sort();
        let mut store = Self::empty(cfg);
        for (name, path) in files {
            let rf = |source| StoreError::ReadFile { path: path.clone(), source };
            let f = fs::File::open(&path).map_err(rf)?;
            let size = f.metadata().map_err(rf)?.len();
            let room = cfg.max_total_bytes - store.total;
            if size > room {
                return Err(StoreError::TooLarge {
                    path,
                    total: store.total.saturating_add(size),
                    cap: cfg.max_total_bytes,
                });
            }
            // Read at most one byte past the room left, in case the file grew since stat.
            let mut data = Vec::with_capacity(size as usize);
            f.take(room.saturating_add(1)).read_to_end(&mut data).map_err(rf)?;
            if data.len() as u64 > room {
                return Err(StoreError::TooLarge {
                    path,
                    total: store.total.saturating_add(data.len() as u64),
                    cap: cfg.max_total_bytes,
                });
            }
            store.push(name.into(), data.into());
        }
        Ok(store)
    }

    /// Build a store from in-memory objects (tests, benchmarks). Invalid names and objects
    /// beyond the caps are skipped; returns the store and how many were skipped.
    pub fn from_objects<N: AsRef<str>>(
        cfg: StoreConfig,
        objects: impl IntoIterator<Item = (N, Vec<u8>)>,
    ) -> (Self, usize) {
        let mut v: Vec<(String, Vec<u8>)> =
            objects.into_iter().map(|(n, d)| (n.as_ref().to_owned(), d)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|a, b| a.0 == b.0);
        let mut store = Self::empty(cfg);
        let mut skipped = 0;
        for (name, data) in v {
            let fits = (data.len() as u64) <= cfg.max_total_bytes - store.total
                && store.objects.len() < cfg.max_objects;
            if valid_name(name.as_bytes()) && fits {
                store.push(name.into(), data.into());
            } else {
                skipped += 1;
            }
        }
        (store, skipped)
    }

    fn push(&mut self, name: Arc<str>, data: Arc<[u8]>) {
        let id = self.objects.len() as u32;
        self.total += data.len() as u64;
        self.by_name.insert(name.clone(), id);
        self.objects.push(Object { name, data });
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Number of loaded (file) objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Summed size of the loaded objects.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Resolve a request path without its leading `/` (e.g. `b"index.html"`, `b"gen/1024"`)
    /// to an object id and its length. Never panics on arbitrary bytes.
    pub fn resolve(&self, path: &[u8]) -> Option<(ObjectId, u64)> {
        if let Some(digits) = path.strip_prefix(b"gen/") {
            let len = parse_decimal(digits)?;
            return (len <= self.cfg.max_gen_bytes).then_some((ObjectId::GENERATED, len));
        }
        let name = std::str::from_utf8(path).ok()?;
        let &id = self.by_name.get(name)?;
        Some((ObjectId(id), self.objects[id as usize].data.len() as u64))
    }

    /// Length of a file object (`None` for unknown ids and for [`ObjectId::GENERATED`], whose
    /// length is per request).
    pub fn object_len(&self, id: ObjectId) -> Option<u64> {
        self.objects.get(id.0 as usize).map(|o| o.data.len() as u64)
    }

    /// Name of a file object.
    pub fn name(&self, id: ObjectId) -> Option<&str> {
        self.objects.get(id.0 as usize).map(|o| &*o.name)
    }

    /// The bytes of a file object.
    pub fn data(&self, id: ObjectId) -> Option<&Arc<[u8]>> {
        self.objects.get(id.0 as usize).map(|o| &o.data)
    }

    /// Copy the object's bytes at `offset` into `buf`; returns how many were copied (short at
    /// the end of a file object; always `buf.len()` for the generated stream; 0 for an unknown
    /// id). The caller bounds reads by the response's body length.
    pub fn read(&self, id: ObjectId, offset: u64, buf: &mut [u8]) -> usize {
        if id == ObjectId::GENERATED {
            gen_byte_range(offset, buf);
            return buf.len();
        }
        let Some(o) = self.objects.get(id.0 as usize) else {
            return 0;
        };
        let Ok(start) = usize::try_from(offset) else {
            return 0;
        };
        let Some(src) = o.data.get(start..) else {
            return 0;
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        n
    }
}

/// Plain decimal, 1–20 digits, no sign, overflow-checked.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flowtwin-objstore-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pattern_matches_documented_splitmix() {
        // First SplitMix64 output from seed 0 is 0xE220A8397B1DCDAF (reference value).
        assert_eq!(&GEN_PATTERN[..8], &0xE220_A839_7B1D_CDAFu64.to_le_bytes());
        let mut b = [0u8; 4];
        gen_byte_range(GEN_BLOCK as u64, &mut b);
        // Second block is the pattern xor 1.
        assert_eq!(b, [GEN_PATTERN[0] ^ 1, GEN_PATTERN[1] ^ 1, GEN_PATTERN[2] ^ 1, GEN_PATTERN[3] ^ 1]);
    }

    #[test]
    fn gen_resolve_and_read() {
        let s = ObjectStore::empty(StoreConfig { max_gen_bytes: 1000, ..Default::default() });
        assert_eq!(s.resolve(b"gen/1000"), Some((ObjectId::GENERATED, 1000)));
        assert_eq!(s.resolve(b"gen/0"), Some((ObjectId::GENERATED, 0)));
        assert_eq!(s.resolve(b"gen/1001"), None);
        assert_eq!(s.resolve(b"gen/"), None);
        assert_eq!(s.resolve(b"gen/-1"), None);
        assert_eq!(s.resolve(b"gen/99999999999999999999999"), None);
        assert_eq!(s.resolve(b"gen/18446744073709551616"), None);
        assert_eq!(s.resolve(b"gen/1x"), None);
        assert_eq!(s.resolve(b"\xff\xfe"), None);
        let mut a = [0u8; 300];
        assert_eq!(s.read(ObjectId::GENERATED, 65_500, &mut a), 300);
        let mut whole = vec![0u8; 65_800];
        gen_byte_range(0, &mut whole);
        assert_eq!(&a[..], &whole[65_500..]);
    }

    #[test]
    fn load_dir_ok() {
        let d = tmpdir("ok");
        fs::write(d.join("b.bin"), b"bbbb").unwrap();
        fs::write(d.join("a.txt"), b"hello").unwrap();
        fs::write(d.join(".hidden"), b"x").unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        let s = ObjectStore::load_dir(&d).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.total_bytes(), 9);
        // Ids follow name order.
        assert_eq!(s.resolve(b"a.txt"), Some((ObjectId(0), 5)));
        assert_eq!(s.resolve(b"b.bin"), Some((ObjectId(1), 4)));
        assert_eq!(s.resolve(b".hidden"), None);
        assert_eq!(s.resolve(b"sub"), None);
        assert_eq!(s.name(ObjectId(1)), Some("b.bin"));
        let mut buf = [0u8; 8];
        assert_eq!(s.read(ObjectId(0), 1, &mut buf), 4);
        assert_eq!(&buf[..4], b"ello");
        assert_eq!(s.read(ObjectId(0), 5, &mut buf), 0);
        assert_eq!(s.read(ObjectId(0), u64::MAX, &mut buf), 0);
        assert_eq!(s.read(ObjectId(9), 0, &mut buf), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn load_dir_errors_name_the_file() {
        let missing = std::env::temp_dir().join("flowtwin-objstore-does-not-exist");
        let e = ObjectStore::load_dir(&missing).unwrap_err();
        assert!(matches!(e, StoreError::ReadDir { .. }));
        assert!(e.to_string().contains("flowtwin-objstore-does-not-exist"), "{e}");

        let d = tmpdir("bad");
        fs::write(d.join("has space"), b"x").unwrap();
        let e = ObjectStore::load_dir(&d).unwrap_err();
        assert!(matches!(e, StoreError::BadName { .. }));
        assert!(e.to_string().contains("has space"), "{e}");
        fs::remove_dir_all(&d).unwrap();

        let d = tmpdir("big");
        fs::write(d.join("a"), [0u8; 60]).unwrap();
        fs::write(d.join("b"), [0u8; 60]).unwrap();
        let cfg = StoreConfig { max_total_bytes: 100, ..Default::default() };
        let e = ObjectStore::load_dir_with(&d, cfg).unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { total: 120, cap: 100, .. }), "{e:?}");
        assert!(e.to_string().contains("/b"), "{e}");
        let cfg = StoreConfig { max_objects: 1, ..Default::default() };
        assert!(matches!(ObjectStore::load_dir_with(&d, cfg), Err(StoreError::TooMany { .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names() {
        assert!(valid_name(b"index.html"));
        assert!(valid_name(b"a-b_c~d.1"));
        for bad in [&b""[..], b".x", b"a/b", b"a b", b"a%20", b"a?b", b"\xc3\xa9", b"gen/1"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&[b'a'; 256]));
    }

    #[test]
    fn from_objects_skips_invalid_and_oversized() {
        let cfg = StoreConfig { max_total_bytes: 10, ..Default::default() };
        let (s, skipped) = ObjectStore::from_objects(
            cfg,
            [("ok", vec![1; 4]), ("bad name", vec![1]), ("big", vec![0; 20]), ("ok2", vec![2; 6])],
        );
        assert_eq!(skipped, 2);
        assert_eq!(s.len(), 2);
        assert_eq!(s.object_len(s.resolve(b"ok2").unwrap().0), Some(6));
    }

    proptest! {
        #[test]
        fn gen_is_offset_consistent(off in 0u64..(1 << 40), a in 0usize..3000, b in 0usize..3000) {
            let mut whole = vec![0u8; a + b];
            gen_byte_range(off, &mut whole);
            let mut x = vec![0u8; a];
            let mut y = vec![0u8; b];
            gen_byte_range(off, &mut x);
            gen_byte_range(off + a as u64, &mut y);
            prop_assert_eq!(&whole[..a], &x[..]);
            prop_assert_eq!(&whole[a..], &y[..]);
            for (i, &c) in whole.iter().enumerate() {
                let o = off + i as u64;
                prop_assert_eq!(c, GEN_PATTERN[(o % 65536) as usize] ^ (o / 65536) as u8);
            }
        }

        #[test]
        fn resolve_never_panics(path in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (s, _) = ObjectStore::from_objects(StoreConfig::default(), [("x", vec![1, 2, 3])]);
            let _ = s.resolve(&path);
            let mut p = b"gen/".to_vec();
            p.extend_from_slice(&path);
            let _ = s.resolve(&p);
        }
    }
}
