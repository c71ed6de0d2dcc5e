//! The projections' Kafka partitions shared through PostgreSQL (docs/streaming.md, "Partition
//! ownership"): members split the partitions without overlap, a dead member's partitions are
//! taken at once, offsets never move backwards or let an offset be applied twice, and two
//! runners of one projection on the real broker share its partitions and survive one of them
//! dying.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration_tests::{read_model, wait_for, wait_until_projected, HookedConversations, TestApp};
use projections::conversations::Conversations;
use projections::EventSource;
use projections::{Folded, Projected, ProjectionRunner};
use streaming::{PartitionOwners, TopicPartition};

fn partitions(topics: usize, each: i32) -> Vec<TopicPartition> {
    (0..topics)
        .flat_map(|t| {
            (0..each).map(move |p| TopicPartition {
                topic: format!("topic-{t}"),
                partition: p,
            })
        })
        .collect()
}

#[tokio::test]
async fn members_split_the_partitions_without_overlap_and_take_a_dead_members_at_once() {
    let app = TestApp::builder().embedded().spawn().await;
    let all = partitions(3, 3);
    let everything: BTreeSet<TopicPartition> = all.iter().cloned().collect();
    let group = "answers.conversations";

    let mut a = PartitionOwners::join(&app.pool, group).await.unwrap();
    let alone = a.rebalance(&all).await.unwrap();
    assert_eq!(alone.members, 1);
    assert_eq!(
        alone.owned, everything,
        "a lone member owns every partition"
    );

    // A second member: the first gives up its share, then the second can claim it.
    let mut b = PartitionOwners::join(&app.pool, group).await.unwrap();
    let b_first = b.rebalance(&all).await.unwrap();
    assert_eq!(b_first.members, 2);
    assert!(
        b_first.owned.is_empty(),
        "nothing is free until the first member gives it up: {:?}",
        b_first.owned
    );
    let a_shared = a.rebalance(&all).await.unwrap();
    let b_shared = b.rebalance(&all).await.unwrap();
    assert_eq!((a_shared.owned.len(), b_shared.owned.len()), (5, 4));
    assert!(a_shared.owned.is_disjoint(&b_shared.owned));
    assert_eq!(
        a_shared
            .owned
            .union(&b_shared.owned)
            .cloned()
            .collect::<BTreeSet<_>>(),
        everything
    );
    // Another group's members neither count nor take anything here.
    let mut other = PartitionOwners::join(&app.pool, "answers.audit")
        .await
        .unwrap();
    assert_eq!(other.rebalance(&all).await.unwrap().owned, everything);
    assert_eq!(a.rebalance(&all).await.unwrap(), a_shared, "stable");

    // The second member dies without a word (its connection drops, as with SIGKILL): the
    // first takes everything on its next rebalance.
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let took = loop {
        let ownership = a.rebalance(&all).await.unwrap();
        if ownership.owned == everything {
            break ownership;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivor owns every partition within 10 s: {ownership:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(took.members, 1);
    other.leave().await;
    a.leave().await;
}

#[tokio::test]
async fn an_offset_moves_only_forward_and_is_never_applied_twice() {
    let app = TestApp::builder().embedded().spawn().await;
    let partition = TopicPartition {
        topic: "answers.events.conversation".into(),
        partition: 2,
    };
    let group = "answers.conversations";
    let mut conn = app.pool.acquire().await.unwrap();
    assert!(streaming::advance_offset(&mut conn, group, &partition, 5)
        .await
        .unwrap());
    assert!(
        !streaming::advance_offset(&mut conn, group, &partition, 5)
            .await
            .unwrap(),
        "offset 5 once"
    );
    assert!(
        !streaming::advance_offset(&mut conn, group, &partition, 3)
            .await
            .unwrap(),
        "never backwards"
    );
    assert!(streaming::advance_offset(&mut conn, group, &partition, 9)
        .await
        .unwrap());
    assert_eq!(
        streaming::stored_offset(&app.pool, group, &partition)
            .await
            .unwrap(),
        Some(10),
        "the next offset to read"
    );
    assert_eq!(
        streaming::stored_offset(&app.pool, "answers.audit", &partition)
            .await
            .unwrap(),
        None,
        "per group"
    );
}

/// Waits until every one of `partitions` is held, by `members` distinct members in all.
async fn held_by(pool: &sqlx::PgPool, group: &str, partitions: &[TopicPartition], members: usize) {
    wait_for(
        &format!("the partitions to be held by {members} members"),
        Duration::from_secs(15),
        || async {
            let holders = streaming::partition_holders(pool, group, partitions)
                .await
                .unwrap();
            let pids: BTreeSet<i32> = holders.values().copied().collect();
            (holders.len() == partitions.len() && pids.len() == members).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_runners_share_a_projections_partitions_and_one_takes_over_when_the_other_dies() {
    let builder = TestApp::builder()
        .streaming()
        .configure(|s| s.kafka.projections_in_process = false);
    let kafka = builder.settings().kafka.clone();
    let app = builder.spawn().await;
    // The conversations projection, counting what each runner is given.
    let counted = |seen: Arc<AtomicUsize>| {
        HookedConversations(move |_: &Projected| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    };
    let runner = |seen: Arc<AtomicUsize>| {
        let source = streaming::KafkaSource::for_projection(
            kafka.clone(),
            app.pool.clone(),
            &counted(seen.clone()),
        );
        ProjectionRunner::new(app.pool.clone(), Arc::new(counted(seen)), source)
    };
    let (first_seen, second_seen) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
    let first = tokio::spawn(runner(first_seen.clone()).run_supervised());
    let second = tokio::spawn(runner(second_seen.clone()).run_supervised());

    // Both hold a share before any event is written (a member gives up its surplus, the other
    // claims it, within a rebalance or two).
    let topic_partitions: Vec<TopicPartition> = (0..kafka.partitions)
        .map(|partition| TopicPartition {
            topic: kafka.topic("conversation"),
            partition,
        })
        .collect();
    let group = format!("{}.conversations", kafka.consumer_group);
    held_by(&app.pool, &group, &topic_partitions, 2).await;

    let admin = app.create_tenant("acme", "alice").await;
    for i in 0..24 {
        let _ = app
            .ask(&admin, &format!("How do I set up integration {i}?"))
            .await;
    }
    wait_until_projected(&app.pool, Duration::from_secs(60)).await;
    let (a, b) = (
        first_seen.load(Ordering::SeqCst),
        second_seen.load(Ordering::SeqCst),
    );
    assert!(a > 0 && b > 0, "both runners applied events: {a} and {b}");
    assert_eq!(
        (a + b) as i64,
        integration_tests::stored_conversation_events(&app.pool).await,
        "each event was given to one runner, once"
    );

    // The second dies (its task and with it its connections are gone); the first takes its
    // partitions and applies what comes next.
    second.abort();
    let _ = second.await;
    held_by(&app.pool, &group, &topic_partitions, 1).await;
    let before = first_seen.load(Ordering::SeqCst);
    for i in 0..24 {
        let _ = app
            .ask(&admin, &format!("And what about region {i}?"))
            .await;
    }
    wait_until_projected(&app.pool, Duration::from_secs(30)).await;
    assert!(first_seen.load(Ordering::SeqCst) > before);
    assert_eq!(
        integration_tests::applied_conversation_events(&app.pool).await,
        integration_tests::stored_conversation_events(&app.pool).await,
        "every event applied once"
    );
    first.abort();
    let live = read_model(&app.pool).await;
    projections::rebuild(&app.pool, &Folded(Conversations))
        .await
        .unwrap();
    assert_eq!(read_model(&app.pool).await, live, "live equals a rebuild");
}

/// A member judges a stall by its own partitions: caught up with them, it is not stalled by
/// events waiting elsewhere (the projection's whole lag), but a partition nobody holds is.
#[tokio::test]
async fn a_member_whose_own_partitions_are_caught_up_has_nothing_waiting() {
    let builder = TestApp::builder()
        .streaming()
        .configure(|s| s.kafka.projections_in_process = false);
    let kafka = builder.settings().kafka.clone();
    let app = builder.spawn().await;
    let admin = app.create_tenant("acme", "alice").await;
    for i in 0..12 {
        let _ = app
            .ask(&admin, &format!("How do I set up integration {i}?"))
            .await;
    }
    integration_tests::wait_until_published(&app.pool).await;
    let source = || {
        streaming::KafkaSource::for_projection(
            kafka.clone(),
            app.pool.clone(),
            &Folded(Conversations),
        )
    };

    // Alone, it owns every partition, and events wait in them until it has read them all.
    let mut first = source();
    first.open().await.unwrap();
    assert_eq!(first.waiting().await.unwrap(), Some(true));
    let mut read = 0;
    while let Ok(delivery) = tokio::time::timeout(Duration::from_secs(3), first.next()).await {
        first.ack(&delivery.unwrap()).await.unwrap();
        read += 1;
    }
    assert_eq!(
        read,
        integration_tests::stored_conversation_events(&app.pool).await
    );
    assert_eq!(first.waiting().await.unwrap(), Some(false));

    // A second member owns nothing yet (the first holds every partition): nothing waits for
    // it, although the projection applied none of these events (its whole lag is not zero).
    let mut second = source();
    second.open().await.unwrap();
    let lag = projections::ProjectionStatus::load(&app.pool, &Folded(Conversations))
        .await
        .unwrap()
        .lag_events;
    assert!(lag > 0, "{lag}");
    assert_eq!(second.waiting().await.unwrap(), Some(false));

    // The first goes away: its partitions are held by nobody, which is a stall to the second
    // until it claims them.
    first.close().await;
    drop(first);
    assert_eq!(second.waiting().await.unwrap(), Some(true));
    second.close().await;
}
