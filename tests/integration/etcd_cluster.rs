//! The etcd test cluster itself (`anycast_tests::etcd`): three members start
//! and elect a leader, the client puts and gets, and when the leader is
//! killed the survivors elect another one and still take writes; the killed
//! member comes back with what it missed, and a leader stopped gracefully is
//! replaced too.

use std::time::Duration;

use anycast_tests::etcd::Cluster;

/// How long a failover may take: an election timeout is 500 ms; the rest is
/// slack for a busy machine.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_three_member_cluster_elects_a_new_leader_when_its_leader_dies() {
    let mut cluster = Cluster::start(3);
    assert_eq!(cluster.endpoints().len(), 3);
    assert!(cluster.endpoint(0).starts_with("http://127.0.0.1:"));

    cluster.put("/anycast/a", "1");
    // An empty value is left out of the gateway's JSON.
    cluster.put("/anycast/b", "");
    cluster.put("/anycastz", "outside the prefix");
    let (value, first_revision) = cluster.get("/anycast/a").expect("a is set");
    assert_eq!(value, "1");
    assert!(first_revision > 0);
    assert_eq!(cluster.get("/anycast/c"), None);
    assert_eq!(
        cluster.get_prefix("/anycast/"),
        vec![
            ("/anycast/a".to_owned(), "1".to_owned()),
            ("/anycast/b".to_owned(), String::new()),
        ]
    );

    let old = cluster.wait_for_leader(FAILOVER_DEADLINE);
    cluster.kill(old);
    assert!(!cluster.is_running(old));
    let new = cluster.wait_for_leader(FAILOVER_DEADLINE);
    assert_ne!(new, old, "a killed member cannot lead");
    cluster.put("/anycast/a", "2");
    let (value, revision) = cluster.get("/anycast/a").expect("a is set");
    assert_eq!(value, "2");
    assert!(revision > first_revision);

    // Back on its ports and data, it catches up: a linearizable read from it
    // alone sees the write made while it was down.
    cluster.restart(old);
    assert_eq!(
        cluster.member_client(old).get("/anycast/a").map(|(v, _)| v),
        Some("2".to_owned())
    );

    let leader = cluster.wait_for_leader(FAILOVER_DEADLINE);
    cluster.stop(leader);
    let next = cluster.wait_for_leader(FAILOVER_DEADLINE);
    assert_ne!(next, leader);
    cluster.put("/anycast/a", "3");
    assert_eq!(
        cluster.get("/anycast/a").map(|(v, _)| v),
        Some("3".to_owned())
    );
}
