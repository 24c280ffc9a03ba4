//! What leaves the cache: the least recently pulled content past the size limit, and content
//! nobody pulls once it expires.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_size_limit_evicts_the_least_recently_pulled_content_only() {
    let s = setup(Auth::None, |u| u.max_size = Some(300_000)).await;
    let old = push_image(&s.upstream.url, "library/old", "1", vec![noise(16, 120_000)]).await;
    let mid = push_image(&s.upstream.url, "library/mid", "1", vec![noise(17, 120_000)]).await;
    let new = push_image(&s.upstream.url, "library/new", "1", vec![noise(18, 120_000)]).await;
    let pull = |repo: &'static str, image: common::upstream::Pushed| {
        let url = s.berth.url("");
        async move {
            let r = get(format!("{url}/v2/hub/{repo}/manifests/1")).await;
            assert_eq!(r.status(), StatusCode::OK);
            let r = get(format!("{url}/v2/hub/{repo}/blobs/{}", image.layers[0])).await;
            assert_eq!(body_digest(r).await.unwrap(), image.layers[0]);
        }
    };
    pull("old", old.clone()).await;
    pull("mid", mid.clone()).await;
    pull("old", old.clone()).await; // old is now more recent than mid
    pull("new", new.clone()).await;
    let proxy = s.berth.state.proxy.clone().unwrap();
    let evicted = proxy.maintain_once().await.unwrap();
    assert!(evicted >= 1, "nothing evicted");
    let layer_file = |d: &str| {
        let hex = d.trim_start_matches("sha256:").to_owned();
        s.berth.stored_blobs().iter().any(|p| p.ends_with(&hex))
    };
    assert!(!layer_file(&mid.layers[0]), "the least recently pulled layer is evicted");
    assert!(layer_file(&old.layers[0]) && layer_file(&new.layers[0]));
    // Evicted content is fetched again on demand.
    s.counter.reset();
    pull("mid", mid.clone()).await;
    assert_eq!(s.counter.count("GET", &mid.layers[0]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_nobody_pulls_expires_and_pulled_content_stays() {
    let s = setup(Auth::None, |u| u.unpulled_ttl = Some(Duration::from_secs(2))).await;
    let kept = push_image(&s.upstream.url, "library/kept", "1", vec![noise(37, 3000)]).await;
    let idle = push_image(&s.upstream.url, "library/idle", "1", vec![noise(38, 3000)]).await;
    let pull = |repo: &'static str, image: common::upstream::Pushed| {
        let url = s.berth.url("");
        async move {
            assert_eq!(get(format!("{url}/v2/hub/{repo}/manifests/1")).await.status(), StatusCode::OK);
            let r = get(format!("{url}/v2/hub/{repo}/blobs/{}", image.layers[0])).await;
            assert_eq!(body_digest(r).await.unwrap(), image.layers[0]);
        }
    };
    pull("kept", kept.clone()).await;
    pull("idle", idle.clone()).await;
    let proxy = s.berth.state.proxy.clone().unwrap();
    assert_eq!(proxy.maintain_once().await.unwrap(), 0, "nothing is old yet");
    // Keep pulling one image while the other ages past the TTL.
    let until = Instant::now() + Duration::from_millis(2600);
    while Instant::now() < until {
        pull("kept", kept.clone()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(proxy.maintain_once().await.unwrap() >= 1);
    let layer_file = |d: &str| {
        let hex = d.trim_start_matches("sha256:").to_owned();
        s.berth.stored_blobs().iter().any(|p| p.ends_with(&hex))
    };
    assert!(!layer_file(&idle.layers[0]), "unpulled content expired");
    assert!(layer_file(&kept.layers[0]), "pulled content stays");
    s.counter.reset();
    pull("idle", idle.clone()).await;
    assert_eq!(s.counter.count("GET", &idle.layers[0]), 1, "expired content is fetched again");
}
