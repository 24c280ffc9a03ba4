//! The run log: progress and reports, a cancel asked on any replica, and a run cut off resumed.

use super::*;

async fn runs_are_logged_with_their_progress_and_report(w: World) {
    w.manifest("gc/a", "garbage-a", &["layer-a"], &[], None, None).await;
    w.manifest("gc/b", "kept-b", &[], &[], None, Some("b")).await;
    let report = w.collector.run(&Options { grace: Duration::ZERO, ..Options::default() }).await.unwrap();
    let runs = w.collector.run_views(10, None).await.unwrap();
    assert_eq!(runs.len(), 1);
    let (run, listed) = (w.collector.run_view(&runs[0].id).await.unwrap().unwrap(), &runs[0]);
    assert_eq!((run.state, run.dry_run, run.grace_seconds), ("succeeded", false, 0));
    assert_eq!(run.report, Some(serde_json::to_value(&report).unwrap()));
    assert_eq!(listed.report, None, "a list leaves reports out");
    let p = &run.progress;
    assert_eq!((p["phase"].as_str(), p["repositoriesDone"].as_u64()), (Some("done"), Some(2)));
    assert_eq!(p["repositoriesTotal"], 2);
    assert_eq!((p["manifestsRemoved"].as_u64(), p["blobsReleased"].as_u64()), (Some(1), Some(2)));
    assert!(run.ended_at.is_some() && run.error.is_none());
}

/// A cancel asked on any replica reaches the run through the log, and the run stops there.
async fn a_cancel_reaches_the_run_and_stops_it(w: World) {
    use crate::gc::progress::Control;
    use crate::gc::runs::{host, tick};
    use crate::meta::runs::RunRecord;
    use crate::meta::testsuite::run_record;
    w.manifest("gc/a", "garbage-a", &["layer-a"], &[], None, None).await;
    let record = RunRecord {
        grace_seconds: 0,
        keep_untagged: false,
        verify: false,
        resumed_from: None,
        ..run_record("cancelled", &host(), crate::meta::now_millis())
    };
    w.store.insert_run(&record, 10).await.unwrap();
    let asked = w.collector.cancel("cancelled").await.unwrap().unwrap();
    assert!(asked.cancel_requested && asked.state == "running");
    let control = Arc::new(Control::default());
    let ticker = tokio::spawn(tick(w.store.clone(), "cancelled".into(), "holder".into(), control.clone()));
    for _ in 0..100 {
        if control.cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ticker.abort();
    assert!(control.cancelled(), "the ticker read the cancel");
    let o = Options { grace: Duration::ZERO, ..Options::default() };
    let report = w.collector.execute("cancelled".into(), "holder".into(), o, control).await.unwrap();
    assert!(report.cancelled && report.manifests_removed == 0 && report.blobs.is_empty());
    assert!(w.has_manifest("gc/a", "garbage-a").await, "it stopped before it removed anything");
    let run = w.collector.run_view("cancelled").await.unwrap().unwrap();
    assert_eq!(run.state, "cancelled");
    assert_eq!(run.report.map(|r| r["cancelled"].clone()), Some(serde_json::Value::Bool(true)));
}

/// A run cut off by a restart is interrupted; the next real run with its options goes on after
/// the last repository it finished, and the one after that walks everything again.
async fn a_run_cut_off_is_resumed_where_it_stopped(w: World) {
    use crate::meta::runs::RunRecord;
    use crate::meta::testsuite::run_record;
    for r in ["a", "b", "c"] {
        w.manifest(&format!("gc/{r}"), &format!("garbage-{r}"), &[], &[], None, None).await;
    }
    let cut = RunRecord {
        grace_seconds: 0,
        keep_untagged: false,
        verify: false,
        resumed_from: None,
        progress: r#"{"phase":"repositories","cursor":"gc/b","repositoriesDone":2}"#.into(),
        ..run_record("cut", &crate::gc::runs::host(), crate::meta::now_millis())
    };
    w.store.insert_run(&cut, 10).await.unwrap();
    w.collector.recover().await;
    assert_eq!(w.collector.run_view("cut").await.unwrap().unwrap().state, "interrupted");
    let dry = Options { grace: Duration::ZERO, dry_run: true, ..Options::default() };
    assert_eq!(w.collector.run(&dry).await.unwrap().manifests_removed, 3, "a dry run resumes nothing");
    // The dry run is the last one now: another is cut off after it.
    let started_at = crate::meta::now_millis();
    w.store.insert_run(&RunRecord { id: "cut-2".into(), started_at, ..cut.clone() }, 10).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    w.store.interrupt_runs("", crate::meta::now_millis()).await.unwrap();

    let o = Options { grace: Duration::ZERO, ..Options::default() };
    let report = w.collector.run(&o).await.unwrap();
    assert_eq!(names(&report).0, BTreeSet::from([d("garbage-c")]), "only after the cursor");
    let run = &w.collector.run_views(1, None).await.unwrap()[0];
    assert_eq!(run.resumed_from.as_deref(), Some("cut-2"));
    assert_eq!(
        (run.progress["repositoriesDone"].as_u64(), run.progress["repositoriesTotal"].as_u64()),
        (Some(3), Some(3))
    );
    let report = w.collector.run(&o).await.unwrap();
    assert_eq!(names(&report).0, BTreeSet::from([d("garbage-a"), d("garbage-b")]));
    assert_eq!(w.collector.run_views(1, None).await.unwrap()[0].resumed_from, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_are_logged_cancelled_and_resumed() {
    runs_are_logged_with_their_progress_and_report(World::new(SqliteMeta::temporary().unwrap())).await;
    a_cancel_reaches_the_run_and_stops_it(World::new(SqliteMeta::temporary().unwrap())).await;
    a_run_cut_off_is_resumed_where_it_stopped(World::new(SqliteMeta::temporary().unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runs_are_logged_cancelled_and_resumed() {
    use crate::meta::postgres::{testing::TestDatabase, PostgresMeta};
    let db = TestDatabase::create().await;
    runs_are_logged_with_their_progress_and_report(World::new(
        PostgresMeta::connect(&db.url, 4).await.unwrap(),
    ))
    .await;
    let db = TestDatabase::create().await;
    a_cancel_reaches_the_run_and_stops_it(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap())).await;
    let db = TestDatabase::create().await;
    a_run_cut_off_is_resumed_where_it_stopped(World::new(PostgresMeta::connect(&db.url, 4).await.unwrap()))
        .await;
}
