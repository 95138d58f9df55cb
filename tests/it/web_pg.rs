//! The web page on PostgreSQL: the checks of `web.rs` through the real jobd binary on a
//! database of its own per test (every page and API route for jobs in every state, a
//! recorded retry and bulk cancel, the event stream, pause and resume, pipelines and
//! holds), and the driver's own reads: searches bounded by an index or a window of ids,
//! the succeeded count from its base, and a change token that moves only when a row did.

use crate::pg::TestDb;
use crate::web::{self, WebDaemon};
use jobd::job::{JobState, NewJob};
use jobd::store::web::{JobSearch, WebReads};
use jobd::store::Store;
use std::time::Duration;

#[test]
fn on_postgres_every_page_and_api_route_answers_for_jobs_in_every_state() {
    let test = "on_postgres_every_page_and_api_route_answers_for_jobs_in_every_state";
    let Some(daemon) = WebDaemon::start_on_postgres(test, false, true, "") else {
        return;
    };
    web::every_page_and_api_route_answers(daemon);
}

#[test]
fn on_postgres_a_retry_with_actions_on_moves_a_dead_job_to_queued_and_is_recorded() {
    let test = "on_postgres_a_retry_with_actions_on_moves_a_dead_job_to_queued_and_is_recorded";
    let Some(daemon) = WebDaemon::start_on_postgres(test, true, false, "") else {
        return;
    };
    web::a_retry_moves_a_dead_job_to_queued_and_is_recorded(daemon);
}

#[test]
fn on_postgres_a_queue_paused_from_the_page_is_not_claimed_until_resumed() {
    let test = "on_postgres_a_queue_paused_from_the_page_is_not_claimed_until_resumed";
    let Some(daemon) = WebDaemon::start_on_postgres(test, true, false, "") else {
        return;
    };
    web::a_paused_queue_is_not_claimed_until_resumed(daemon);
}

#[test]
fn on_postgres_the_overview_shows_pipelines_destinations_and_a_hold() {
    let test = "on_postgres_the_overview_shows_pipelines_destinations_and_a_hold";
    let Some(daemon) = WebDaemon::start_on_postgres(test, false, false, &web::three_pipelines())
    else {
        return;
    };
    web::the_overview_shows_the_next_runs(daemon);
    let Some(daemon) = WebDaemon::start_on_postgres(test, false, false, "") else {
        return;
    };
    web::the_overview_shows_a_hold(daemon);
}

/// A migrated database with `succeeded` finished rows, a few dead and queued ones and a
/// waiting parent, analysed so the planner knows its size.
fn big_table(test: &str, succeeded: i64) -> Option<(TestDb, jobd::store::postgres::PgStore)> {
    let db = TestDb::create(test)?;
    let store = db.store("web-test");
    let mut client = db.client();
    client
        .batch_execute(&format!(
            "INSERT INTO jobs (kind, payload, state, finished_at, created_at) \
             SELECT 'noop', json_build_object('n', n), 'succeeded', 1000 + n, n \
             FROM generate_series(1, {succeeded}) AS n;
             INSERT INTO jobs (kind, payload, state, finished_at, last_error) \
             SELECT 'http', '{{}}', 'dead', 5000, 'upstream answered 503' \
             FROM generate_series(1, 3);
             INSERT INTO jobs (kind, run_at) VALUES ('noop', 0), ('noop', 0);
             INSERT INTO jobs (kind, state) VALUES ('fanout', 'waiting');
             ANALYZE jobs;"
        ))
        .unwrap();
    Some((db, store))
}

#[test]
fn on_postgres_searches_use_an_index_or_a_bounded_window_of_ids() {
    let Some((_db, store)) = big_table("on_postgres_searches_use_an_index", 120_000) else {
        return;
    };
    let plan = |search: JobSearch| store.web_search_plan(&search).unwrap().join("\n");
    for (state, index) in [
        (JobState::Dead, "jobs_finished"),
        (JobState::Waiting, "jobs_waiting"),
        (JobState::Queued, "Index"),
    ] {
        let plan = plan(JobSearch {
            state: Some(state),
            ..Default::default()
        });
        assert!(plan.contains(index), "{state}: {plan}");
        assert!(!plan.contains("Seq Scan"), "{state}: {plan}");
    }
    // Text in any row: a window of ids below the top, read down the primary key.
    let search = JobSearch {
        text: Some("answered".into()),
        limit: 50,
        ..Default::default()
    };
    let text_plan = plan(search.clone());
    assert!(
        text_plan.contains("jobs_pkey") && !text_plan.contains("Seq Scan"),
        "{text_plan}"
    );
    let page = store.web_search(&search).unwrap();
    assert_eq!(page.jobs.len(), 3, "the dead rows are near the top");
    let floor = page.searched_down_to.expect("a window");
    assert_eq!(page.next_before, Some(floor));
    // The next page goes on below the window, down to the first id: the last page.
    let below = store
        .web_search(&JobSearch {
            before: Some(floor),
            ..search.clone()
        })
        .unwrap();
    assert!(below.jobs.is_empty());
    assert_eq!((below.searched_down_to, below.next_before), (None, None));
    assert_eq!(
        store.web_count_matching(&search, JobState::Dead).unwrap(),
        3
    );
    assert!(store
        .web_count_matching(&search, JobState::Running)
        .is_err());
    let groups = store.web_dead_groups(10).unwrap();
    assert_eq!(
        (groups.len(), groups[0].count, groups[0].error.as_str()),
        (1, 3, "upstream answered 503")
    );
}

#[test]
fn on_postgres_the_succeeded_count_adds_rows_finished_since_its_base() {
    let Some((_db, mut store)) = big_table("on_postgres_the_succeeded_count", 1_000) else {
        return;
    };
    // Rows finished at 1001..=2000: the base counts those up to 1500.
    let base = store
        .web_succeeded_base(2_500, Duration::from_millis(1_000))
        .unwrap();
    assert_eq!((base.count, base.after), (500, 1_500));
    let dyn_store: &mut dyn Store = &mut store;
    dyn_store
        .write(|tx| {
            tx.record_web_action(&serde_json::json!({"action": "retry"}), 2_400)?;
            tx.record_web_action(&serde_json::json!({"action": "cancel"}), 2_400)
        })
        .unwrap();
    let overview = store.web_overview(2_500, Some(&base), None).unwrap();
    // The action records are succeeded rows in form only.
    assert_eq!(overview.finished["succeeded"], 1_000);
    assert_eq!(overview.finished["dead"], 3);
    assert_eq!(
        store.web_overview(2_500, None, None).unwrap().finished,
        overview.finished
    );
    assert_eq!(overview.live["default"]["queued"], 2);
    assert_eq!(overview.live["default"]["waiting"], 1);
    assert_eq!(overview.oldest_ready_age_ms["default"], 2_500);
    let actions = store.web_actions(10).unwrap();
    assert_eq!(
        actions
            .iter()
            .map(|a| a.detail["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["cancel", "retry"],
        "newest first"
    );
}

#[test]
fn on_postgres_the_change_token_moves_when_a_row_changed_and_only_then() {
    let Some(db) = TestDb::create("on_postgres_the_change_token") else {
        return;
    };
    let mut store = db.store("web-test");
    let mut client = db.client();
    let token = || WebReads::web_change_token(&store).unwrap();
    let before = token();
    // Statements that change nothing, as an idle daemon's claims and rescues.
    client
        .batch_execute(
            "UPDATE jobs SET priority = 1 WHERE state = 'running'; \
             DELETE FROM jobs WHERE id < 0; DELETE FROM queue_pauses",
        )
        .unwrap();
    assert_eq!(token(), before);
    client
        .batch_execute("INSERT INTO jobs (kind) VALUES ('noop')")
        .unwrap();
    let inserted = token();
    assert_ne!(inserted, before);
    let dyn_store: &mut dyn Store = &mut store;
    dyn_store
        .write(|tx| tx.pause_queue("default", Some("test"), 1))
        .unwrap();
    assert_ne!(WebReads::web_change_token(&store).unwrap(), inserted);
    let paused = WebReads::web_change_token(&store).unwrap();
    let dyn_store: &mut dyn Store = &mut store;
    dyn_store
        .write(|tx| tx.enqueue(&[NewJob::new("noop", serde_json::json!({}))], 1))
        .unwrap();
    assert_ne!(WebReads::web_change_token(&store).unwrap(), paused);
}
