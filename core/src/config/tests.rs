//! Parsing and validation of whole configuration files.

use super::*;

#[test]
fn empty_file_is_the_default() {
    assert_eq!(Config::from_yaml("", "c.yaml").unwrap(), Config::default());
    let c = Config::default();
    assert_eq!(c.listen_addr().unwrap().port(), 5000);
    assert_eq!(c.storage_path(), Some(PathBuf::from("./berth-data/storage")));
    assert_eq!(c.sqlite_path(), Some(PathBuf::from("./berth-data/meta.db")));
}

#[test]
fn s3_storage() {
    let text = "storage: {kind: s3, bucket: berth, endpoint: 'http://127.0.0.1:9000', path_style: true, \
                credentials_dir: /etc/berth/s3}\n";
    let c = Config::from_yaml(text, "c.yaml").unwrap();
    let StorageConfig::S3(s3) = &c.storage else { panic!("{:?}", c.storage) };
    assert_eq!((s3.bucket.as_str(), s3.path_style), ("berth", true));
    assert_eq!(c.storage_path(), None);
    assert_eq!(c.sqlite_path(), Some(PathBuf::from("./berth-data/meta.db")), "metadata stays on disk");
    for (bad, field) in [
        ("storage: {kind: s3, bucket: Berth}", "storage.bucket"),
        ("storage: {kind: s3, bucket: b}", "storage.bucket"),
        ("storage: {kind: s3, bucket: berth, endpoint: 'minio:9000'}", "storage.endpoint"),
        ("storage: {kind: s3, bucket: berth, prefix: '../x'}", "storage.prefix"),
        ("storage: {kind: s3}", "storage"),
    ] {
        let e = Config::from_yaml(bad, "c.yaml").unwrap_err();
        assert!(e.to_string().contains(field), "{bad}: {e}");
    }
}

#[test]
fn admin_is_granted_registry_wide_and_only_with_credentials() {
    let ok = "auth: {rules: [{users: [ops], repositories: ['**'], actions: [pull, admin]}]}\n";
    let c = Config::from_yaml(ok, "c.yaml").unwrap();
    let rules = &c.auth.as_ref().map(|a| a.rules.clone()).unwrap_or_default();
    assert_eq!(rules[0].actions, [auth::Action::Pull, auth::Action::Admin]);
    for (bad, said) in [
        ("auth: {rules: [{users: [ops], repositories: ['team/**'], actions: [admin]}]}", "registry-wide"),
        ("auth: {anonymous: [{repositories: ['**'], actions: [admin]}]}", "needs a user or robot"),
    ] {
        let e = Config::from_yaml(bad, "c.yaml").unwrap_err();
        assert!(e.to_string().contains(said), "{bad}: {e}");
    }
}

#[test]
fn memory_storage_keeps_metadata_in_memory() {
    let c = Config::from_yaml("storage: {kind: memory}\n", "c.yaml").unwrap();
    assert_eq!((c.storage_path(), c.sqlite_path()), (None, None));
    let e = Config::from_yaml("storage: {kind: memory}\nmetadata: {kind: sqlite, path: /m.db}\n", "c.yaml")
        .unwrap_err();
    assert!(e.to_string().contains("metadata.path"), "{e}");
}

#[test]
fn small_objects_are_a_size_of_at_most_a_mebibyte() {
    let c = Config::from_yaml("storage: {kind: filesystem, small_objects: 64Ki}\n", "c.yaml").unwrap();
    assert_eq!(c.storage, StorageConfig::Filesystem { path: None, small_objects: Some(64 << 10) });
    assert_eq!(Config::from_yaml(&c.to_yaml(), "again").unwrap(), c);
    let off = Config::from_yaml("storage: {kind: filesystem, small_objects: 0}\n", "c.yaml").unwrap();
    assert_eq!(off.storage, StorageConfig::Filesystem { path: None, small_objects: Some(0) });
    let e = Config::from_yaml("storage: {kind: filesystem, small_objects: 2Mi}\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("storage.small_objects"), "{e}");
}

#[test]
fn full_file_round_trips() {
    let text = "listen: 0.0.0.0:5443\ndata_dir: /var/lib/berth\nlog: {level: debug, format: json}\n\
                tls: {cert: /tls/tls.crt, key: /tls/tls.key, reload_interval: 2s}\n\
                storage: {kind: filesystem, path: /data}\nmetadata: {kind: sqlite}\n\
                limits: {max_manifest_bytes: 8388608, upload_ttl: 2h, shutdown_grace: 5s}\n";
    let c = Config::from_yaml(text, "c.yaml").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.tls.as_ref().unwrap().reload_interval, Duration::from_secs(2));
    assert_eq!(c.limits.upload_ttl, Duration::from_secs(7200));
    assert_eq!(Config::from_yaml(&c.to_yaml(), "again").unwrap(), c);
}

#[test]
fn errors_name_file_and_field() {
    let e = Config::from_yaml("storage: {kind: s4}", "berth.yaml").unwrap_err();
    assert_eq!(e.file, "berth.yaml");
    assert_eq!(e.field, "storage.kind");
    assert!(e.to_string().starts_with("berth.yaml: storage.kind: unknown variant"), "{e}");

    let e = Config::from_yaml("limits: {upload_ttl: forever}", "b.yaml").unwrap_err();
    assert_eq!(e.field, "limits.upload_ttl");

    let e = Config::from_yaml("listen: nowhere", "b.yaml").unwrap_err();
    assert_eq!(e.field, "listen");

    let e = Config::from_yaml("lsiten: 1.2.3.4:5", "b.yaml").unwrap_err();
    assert!(e.message.contains("lsiten"), "{e}");

    let e = Config::from_yaml("log: {format: xml}", "b.yaml").unwrap_err();
    assert_eq!(e.field, "log.format");
}

#[test]
fn listen_addresses() {
    assert_eq!(parse_listen("10.1.2.3:5000").unwrap().to_string(), "10.1.2.3:5000");
    assert_eq!(parse_listen("[fd00::7]:5000").unwrap().to_string(), "[fd00::7]:5000");
    // $(POD_IP):5000 on an IPv6 cluster
    assert_eq!(parse_listen("fd00::7:5000").unwrap().to_string(), "[fd00::7]:5000");
    for bad in ["", "5000", "10.1.2.3", "10.1.2.3:", "10.1.2.3:70000", "fd00::7", "host:5000", ":5000"] {
        assert!(parse_listen(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn durations() {
    assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(duration::parse("7d"), Ok(Duration::from_secs(7 * 86400)));
    for bad in ["", "5", "s", "1.5h", "-1s", "99999999999999999999d"] {
        assert!(duration::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(duration::format(&Duration::from_secs(90)), "90s");
    assert_eq!(duration::format(&Duration::from_secs(3600)), "1h");
}

#[test]
fn sizes() {
    assert_eq!(size::parse("512Mi"), Ok(512 << 20));
    assert_eq!(size::parse("2GiB"), Ok(2 << 30));
    assert_eq!(size::parse("10G"), Ok(10_000_000_000));
    assert_eq!(size::parse("4096"), Ok(4096));
    for bad in ["", "Gi", "1.5Gi", "-1", "3Pi", "99999999999Ti"] {
        assert!(size::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(size::format(50 << 30), "50Gi");
    assert_eq!(size::format(1000), "1000");
}
