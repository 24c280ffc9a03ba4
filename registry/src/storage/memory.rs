//! In-memory backend, for tests and for throwaway registries (`storage: {kind: memory}`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};

use super::{ByteStream, Key, Listed, ObjectWriter, Storage, StorageError};

#[derive(Default)]
pub struct MemoryStorage {
    objects: Objects,
}

/// An object's bytes and when it was written (unix seconds).
#[derive(Clone)]
struct Object {
    bytes: Bytes,
    modified: i64,
}

impl Object {
    fn new(bytes: Bytes) -> Object {
        Object { bytes, modified: crate::meta::now() }
    }
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// Makes the object at `key` as old as if written `secs` seconds earlier (for tests of what
    /// age decides).
    pub fn age(&self, key: &Key, secs: i64) {
        if let Ok(mut map) = self.objects.write() {
            if let Some(o) = map.get_mut(key) {
                o.modified -= secs;
            }
        }
    }
}

type Objects = std::sync::Arc<RwLock<BTreeMap<Key, Object>>>;

fn lock_err() -> StorageError {
    StorageError::Io(std::io::Error::other("memory storage lock poisoned"))
}

#[async_trait::async_trait]
impl Storage for MemoryStorage {
    async fn check(&self) -> Result<(), StorageError> {
        self.objects.read().map(|_| ()).map_err(|_| lock_err())
    }

    async fn stat(&self, key: &Key) -> Result<Option<u64>, StorageError> {
        let map = self.objects.read().map_err(|_| lock_err())?;
        Ok(map.get(key).map(|o| o.bytes.len() as u64))
    }

    async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let bytes = {
            let map = self.objects.read().map_err(|_| lock_err())?;
            map.get(key).map(|o| o.bytes.clone()).ok_or(StorageError::NotFound)?
        };
        let bytes = match range {
            Some(r) => {
                let end = (r.end as usize).min(bytes.len());
                let start = (r.start as usize).min(end);
                bytes.slice(start..end)
            }
            None => bytes,
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(bytes)])))
    }

    async fn writer(&self) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(MemoryWriter { objects: self.objects.clone(), buf: BytesMut::new() }))
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<(), StorageError> {
        let mut map = self.objects.write().map_err(|_| lock_err())?;
        let bytes = map.remove(from).ok_or(StorageError::NotFound)?;
        map.insert(to.clone(), bytes);
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        self.objects.write().map_err(|_| lock_err())?.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &Key) -> Result<Vec<Listed>, StorageError> {
        let map = self.objects.read().map_err(|_| lock_err())?;
        Ok(map
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.as_str().starts_with(prefix.as_str()))
            .map(|(k, o)| Listed { key: k.clone(), size: o.bytes.len() as u64, modified: o.modified })
            .collect())
    }
}

struct MemoryWriter {
    objects: Objects,
    buf: BytesMut,
}

#[async_trait::async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.buf.len() as u64
    }

    async fn commit(self: Box<Self>, key: &Key) -> Result<(), StorageError> {
        let mut map = self.objects.write().map_err(|_| lock_err())?;
        map.insert(key.clone(), Object::new(self.buf.freeze()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::testsuite::run(&super::MemoryStorage::new()).await;
    }
}
