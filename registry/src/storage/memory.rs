//! In-memory backend, for tests and for throwaway registries (`storage: {kind: memory}`).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, RwLock};

use bytes::{Bytes, BytesMut};

use super::{ByteStream, Key, Listed, ObjectWriter, Storage, StorageError};

#[derive(Default)]
pub struct MemoryStorage {
    objects: Objects,
    /// Objects assembled from parts, as an object store builds them: only when made
    /// [`MemoryStorage::assembling`].
    assembly: Option<Assembling>,
}

/// Assemblies running, by id: the key each completes into and its parts (tag, bytes) by index.
struct Assembling {
    part: u64,
    running: Mutex<HashMap<String, AssemblyParts>>,
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

    /// A store that builds large objects from parts of `part` bytes, as S3 does (for tests of
    /// what uploads do on object stores, without one).
    pub fn assembling(part: u64) -> MemoryStorage {
        let assembly = Assembling { part, running: Mutex::default() };
        MemoryStorage { objects: Objects::default(), assembly: Some(assembly) }
    }

    fn running(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, AssemblyParts>>, StorageError> {
        let a = self.assembly.as_ref().ok_or_else(|| super::unsupported("assembling objects from parts"))?;
        a.running.lock().map_err(|_| lock_err())
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
type AssemblyParts = (Key, BTreeMap<usize, (String, Bytes)>);

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

    fn assembly_part_size(&self, _index: usize) -> Option<u64> {
        self.assembly.as_ref().map(|a| a.part)
    }

    async fn start_assembly(&self, key: &Key) -> Result<String, StorageError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.running()?.insert(id.clone(), (key.clone(), BTreeMap::new()));
        Ok(id)
    }

    async fn put_assembly_part(
        &self,
        key: &Key,
        id: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, StorageError> {
        let mut running = self.running()?;
        let parts = match running.get_mut(id) {
            Some((at, parts)) if at == key => parts,
            _ => return Err(StorageError::NotFound),
        };
        let tag = uuid::Uuid::new_v4().simple().to_string();
        parts.insert(index, (tag.clone(), data));
        Ok(tag)
    }

    async fn complete_assembly(&self, key: &Key, id: &str, tags: Vec<String>) -> Result<(), StorageError> {
        let mut running = self.running()?;
        let fits = |(at, parts): &AssemblyParts| {
            at == key
                && parts.len() == tags.len()
                && parts.values().zip(&tags).all(|((t, _), want)| t == want)
        };
        if !running.get(id).is_some_and(fits) {
            return Err(StorageError::Unavailable(format!("assembly {id} does not have the parts {tags:?}")));
        }
        let Some((_, parts)) = running.remove(id) else { return Err(StorageError::NotFound) };
        let mut bytes = BytesMut::new();
        for (_, b) in parts.into_values() {
            bytes.extend_from_slice(&b);
        }
        self.objects.write().map_err(|_| lock_err())?.insert(key.clone(), Object::new(bytes.freeze()));
        Ok(())
    }

    async fn abort_assembly(&self, _key: &Key, id: &str) -> Result<(), StorageError> {
        self.running()?.remove(id);
        Ok(())
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
