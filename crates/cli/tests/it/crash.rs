//! The crash harness, short: a few SIGKILLs of a real server under load, on both stores.
//! `confidant bench crash` with its defaults (50 kills) is the long run.

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
