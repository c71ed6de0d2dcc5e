//! Which process consumes which partition of a projection's topics, decided in PostgreSQL
//! instead of by Kafka's group protocol (docs/streaming.md, "Partition ownership").
//!
//! Why: with the group protocol a SIGKILLed consumer keeps its partitions until its session
//! expires (45 s), and tansu 0.6 never lets a member whose session expired back in. Here every
//! claim is a session advisory lock on one dedicated connection: when the process dies, its
//! connection closes and its partitions are free at once. The offsets live in PostgreSQL beside
//! the read models (`projection_offsets`), so whoever takes a partition reads on exactly where
//! the last committed apply left it.
//!
//! Sharing: each consumer of a group holds one *member slot* lock; the live slots, in order, give
//! every member a rank, and a member wants the partitions whose index modulo the number of
//! members is its rank. A member gives up what it no longer wants before another can take it
//! (try-locks only, nobody waits), so two members never own one partition. Should a claim be
//! lost anyway (the lock connection cut while an apply is in flight), the offset update is a
//! compare-and-set that refuses to move an offset backwards or apply an offset twice.
use std::collections::BTreeSet;

use sqlx::{Connection, PgConnection, PgPool};

/// Member slots per consumer group: how many processes can share one projection.
const MEMBER_SLOTS: i64 = 64;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Why ownership could not be decided: the database failed or the group is full.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error("database")]
    Database(#[from] sqlx::Error),
    #[error("all {MEMBER_SLOTS} member slots of consumer group `{0}` are taken")]
    GroupFull(String),
}

/// One consumer's membership of its group and the partitions it owns, held by the locks of
/// one connection.
pub struct PartitionOwners {
    conn: PgConnection,
    group: String,
    slot: i64,
    /// The backend of `conn`: the locks it holds are this member's.
    pid: i32,
}

/// What a rebalance decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The partitions this member owns now.
    pub owned: BTreeSet<TopicPartition>,
    /// Live members of the group, this one included.
    pub members: usize,
}

impl PartitionOwners {
    /// Joins `group` on a connection of its own (taken out of `pool`: its locks must live exactly
    /// as long as this member).
    pub async fn join(pool: &PgPool, group: &str) -> Result<Self, OwnershipError> {
        let mut conn = pool.acquire().await?.detach();
        // Operators find the members in `pg_stat_activity` (host, port, since when) by this name.
        let pid: i32 = sqlx::query_scalar(
            "SELECT pg_backend_pid() FROM (SELECT set_config('application_name', $1, false)) s",
        )
        .bind(format!("answers-owner:{group}"))
        .fetch_one(&mut conn)
        .await?;
        for slot in 0..MEMBER_SLOTS {
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(member_key(group, slot))
                    .fetch_one(&mut conn)
                    .await?;
            if locked {
                tracing::info!(group, slot, "joined the consumer group");
                return Ok(Self {
                    conn,
                    group: group.to_string(),
                    slot,
                    pid,
                });
            }
        }
        Err(OwnershipError::GroupFull(group.to_string()))
    }

    /// Decides again which of `partitions` this member owns: gives up those another member
    /// should have, claims its share among the free ones. What it owns is read back from the
    /// database each time, so an interrupted rebalance is made good by the next one.
    pub async fn rebalance(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Ownership, OwnershipError> {
        let mut sorted = partitions.to_vec();
        sorted.sort();
        sorted.dedup();
        let slots: Vec<String> = (0..MEMBER_SLOTS)
            .map(|slot| member_key(&self.group, slot))
            .collect();
        let live = lock_holders(&mut self.conn, &slots)
            .await?
            .into_iter()
            .map(|(slot, _)| slot as i64);
        // Our own slot is live as long as this connection is; count it even if the view lags.
        let mut live: BTreeSet<i64> = live.into_iter().collect();
        live.insert(self.slot);
        let members = live.len();
        let rank = live.iter().position(|s| *s == self.slot).unwrap_or(0);
        let wanted: BTreeSet<&TopicPartition> = sorted
            .iter()
            .enumerate()
            .filter(|(i, _)| i % members == rank)
            .map(|(_, p)| p)
            .collect();

        let keys: Vec<String> = sorted
            .iter()
            .map(|p| partition_key(&self.group, p))
            .collect();
        let held: BTreeSet<usize> = lock_holders(&mut self.conn, &keys)
            .await?
            .into_iter()
            .filter(|(_, pid)| *pid == self.pid)
            .map(|(i, _)| i)
            .collect();
        let mut owned = BTreeSet::new();
        for (i, partition) in sorted.iter().enumerate() {
            let holds = held.contains(&i);
            match (holds, wanted.contains(partition)) {
                (true, true) => {
                    owned.insert(partition.clone());
                }
                (true, false) => {
                    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                        .bind(&keys[i])
                        .execute(&mut self.conn)
                        .await?;
                    tracing::info!(group = %self.group, topic = %partition.topic,
                        partition = partition.partition, "gave up a partition");
                }
                (false, true) => {
                    let claimed: bool =
                        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                            .bind(&keys[i])
                            .fetch_one(&mut self.conn)
                            .await?;
                    if claimed {
                        tracing::info!(group = %self.group, topic = %partition.topic,
                            partition = partition.partition, "claimed a partition");
                        owned.insert(partition.clone());
                    }
                }
                (false, false) => {}
            }
        }
        Ok(Ownership { owned, members })
    }

    /// Leaves the group: every claim is released with the connection.
    pub async fn leave(self) {
        if let Err(e) = self.conn.close().await {
            tracing::debug!(error = %e, "the ownership connection closed badly; its locks went with it");
        }
    }
}

/// Who holds each of `partitions` in `group` now: the PostgreSQL backend pid of the member's
/// ownership connection (`pg_stat_activity` says which host and process that is). Free
/// partitions are absent.
pub async fn partition_holders(
    pool: &PgPool,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<std::collections::BTreeMap<TopicPartition, i32>, sqlx::Error> {
    let keys: Vec<String> = partitions.iter().map(|p| partition_key(group, p)).collect();
    let mut conn = pool.acquire().await?;
    Ok(lock_holders(&mut conn, &keys)
        .await?
        .into_iter()
        .filter_map(|(i, pid)| partitions.get(i).map(|p| (p.clone(), pid)))
        .collect())
}

/// Which of the advisory locks named `keys` (`hashtextextended(key, 0)`) are held in this
/// database, and by which backend: (index in `keys`, pid). `pg_locks` shows a bigint key as its
/// high half in `classid` and its low half in `objid`, with `objsubid` 1.
async fn lock_holders(
    conn: &mut PgConnection,
    keys: &[String],
) -> Result<Vec<(usize, i32)>, sqlx::Error> {
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT (k.i - 1)::bigint, l.pid FROM unnest($1::text[]) WITH ORDINALITY k(name, i)
           JOIN pg_locks l
             ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND (l.classid::bigint << 32) | l.objid::bigint = hashtextextended(k.name, 0)",
    )
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(i, pid)| (i as usize, pid)).collect())
}

fn partition_key(group: &str, p: &TopicPartition) -> String {
    format!("{group}:partition:{}:{}", p.topic, p.partition)
}

fn member_key(group: &str, slot: i64) -> String {
    format!("{group}:member:{slot}")
}

/// Where `group` reads on in `partition`: the stored next offset, `None` the first time.
pub async fn stored_offset(
    pool: &PgPool,
    group: &str,
    partition: &TopicPartition,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT next_offset FROM projection_offsets
          WHERE consumer_group = $1 AND topic = $2 AND kafka_partition = $3",
    )
    .bind(group)
    .bind(&partition.topic)
    .bind(partition.partition)
    .fetch_optional(pool)
    .await
}

/// Moves `group`'s offset in `partition` past `offset`, in `conn` (the transaction applying that
/// message). Refused — `false` — when the stored offset is already past it: another consumer
/// applied it, and this one must not apply it again.
pub async fn advance_offset(
    conn: &mut PgConnection,
    group: &str,
    partition: &TopicPartition,
    offset: i64,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "INSERT INTO projection_offsets (consumer_group, topic, kafka_partition, next_offset)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE
            SET next_offset = excluded.next_offset, updated_at = now()
          WHERE projection_offsets.next_offset < excluded.next_offset",
    )
    .bind(group)
    .bind(&partition.topic)
    .bind(partition.partition)
    .bind(offset + 1)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}
