//! S3 credentials from a directory (a mounted Secret's `accessKeyId` and `secretAccessKey`
//! files), re-read in the background so a rotated Secret takes effect without a restart. Requests
//! never read the files: they take the pair last read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use object_store::aws::AwsCredential;
use object_store::CredentialProvider;

/// How often the files are re-read.
pub const REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct FileCredentials {
    dir: PathBuf,
    current: RwLock<Arc<AwsCredential>>,
}

fn read(dir: &Path) -> Result<AwsCredential, String> {
    let file = |name: &str| {
        let path = dir.join(name);
        let value = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        Ok(value)
    };
    Ok(AwsCredential { key_id: file("accessKeyId")?, secret_key: file("secretAccessKey")?, token: None })
}

impl FileCredentials {
    /// Reads the pair once; an error names the file, never a value.
    pub fn load(dir: &Path) -> Result<Arc<FileCredentials>, String> {
        let first = read(dir)?;
        Ok(Arc::new(FileCredentials { dir: dir.to_owned(), current: RwLock::new(Arc::new(first)) }))
    }

    /// Re-reads the files; a pair that cannot be read leaves the last good one in use.
    /// Returns whether the pair changed.
    pub fn refresh(&self) -> Result<bool, String> {
        let fresh = read(&self.dir)?;
        let mut current = self.current.write().map_err(|_| "credentials lock poisoned".to_owned())?;
        if **current == fresh {
            return Ok(false);
        }
        *current = Arc::new(fresh);
        Ok(true)
    }

    /// Re-reads every [`REFRESH`] on the blocking pool, for as long as the provider lives.
    pub fn watch(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let weak: Weak<FileCredentials> = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(creds) = weak.upgrade() else { return };
                match tokio::task::spawn_blocking(move || creds.refresh()).await {
                    Ok(Ok(true)) => tracing::info!("object storage credentials changed; using the new pair"),
                    Ok(Ok(false)) | Err(_) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "object storage credentials not re-read; keeping the last pair"),
                }
            }
        });
    }
}

#[async_trait::async_trait]
impl CredentialProvider for FileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current.read().map(|c| c.clone()).map_err(|_| object_store::Error::Generic {
            store: "S3",
            source: "credentials lock poisoned".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rotated_secret_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let write = |k: &str, s: &str| {
            std::fs::write(dir.path().join("accessKeyId"), format!("{k}\n")).unwrap();
            std::fs::write(dir.path().join("secretAccessKey"), s).unwrap();
        };
        write("key", "first");
        let creds = FileCredentials::load(dir.path()).unwrap();
        assert_eq!(creds.get_credential().await.unwrap().secret_key, "first");
        assert!(!creds.refresh().unwrap(), "nothing changed");

        write("key", "second");
        assert!(creds.refresh().unwrap());
        let now = creds.get_credential().await.unwrap();
        assert_eq!((now.key_id.as_str(), now.secret_key.as_str()), ("key", "second"));

        // Mid-rotation the kubelet may show an empty or missing file: keep the last good pair.
        write("key", "");
        let e = creds.refresh().unwrap_err();
        assert!(e.contains("secretAccessKey is empty") && !e.contains("second"), "{e}");
        std::fs::remove_file(dir.path().join("accessKeyId")).unwrap();
        assert!(creds.refresh().is_err());
        assert_eq!(creds.get_credential().await.unwrap().secret_key, "second");
        assert!(FileCredentials::load(&dir.path().join("missing")).is_err());
    }
}
