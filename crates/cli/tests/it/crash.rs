//! The crash harness and the load test, short: a few SIGKILLs of a real server under load on
//! both stores, and a few seconds of mixed load.
//! `confidant bench crash` and `confidant bench load` with their defaults are the long runs.

use confidant_store::Dialect;
use confidant_store::testing::TestDatabase;

use crate::{confidant, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_servers_lose_no_acknowledged_report_on_either_store() {
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        let db = TestDatabase::create(dialect).await;
        let mut args = vec!["bench", "crash", "--kills", "4", "--clients", "4"];
        if dialect == Dialect::Postgres {
            args.extend(["--database-url", db.url()]);
        }
        let output = confidant(&args);
        let printed = stdout(&output);
        assert!(output.status.success(), "{dialect:?}: {printed}");
        assert!(printed.contains(", lost 0"), "{printed}");
        assert!(printed.contains("half-applied 0"), "{printed}");
        assert!(
            printed.contains("the projections equal the replayed log"),
            "{printed}"
        );
        let acknowledged: u64 = printed
            .split("acknowledged ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("a count of acknowledged submissions");
        assert!(acknowledged > 0, "the load ran: {printed}");
        db.finish().await;
    }
}

#[test]
fn a_short_mixed_load_runs_without_errors() {
    let output = confidant(&[
        "bench",
        "load",
        "--seconds",
        "3",
        "--clients",
        "4",
        "--downloaders",
        "2",
    ]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("errors: 0"), "{printed}");
    for operation in [
        "issue code",
        "redeem code",
        "upload 14 keys",
        "download feed",
    ] {
        let line = printed
            .lines()
            .find(|line| line.starts_with(operation))
            .unwrap_or_else(|| panic!("no line for {operation}: {printed}"));
        let count: u64 = line[operation.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        assert!(count > 0, "{operation} ran: {printed}");
    }
}
