//! Connections that belong to one tenant at a time (docs/isolation.md).
//!
//! The API's pool logs in as a role held to row-level security: its policies read
//! `app.tenant_id`, which [`TenantPool::begin`] sets for one transaction (`SET LOCAL`
//! semantics, `set_config(.., true)`), so it ends with the transaction and never follows a
//! connection back into the pool. There is no other way to a connection of this pool: every
//! query the API makes names its tenant, and a query that forgets its `WHERE tenant_id` still
//! sees only that tenant's rows.
use domain::TenantId;
use sqlx::{PgPool, Postgres, Transaction};

/// The setting the row-level security policies read.
pub const TENANT_SETTING: &str = "app.tenant_id";

/// The API's pool, handed out one tenant-scoped transaction at a time.
#[derive(Clone, Debug)]
pub struct TenantPool {
    pool: PgPool,
    /// Transactions being opened now (waiting for a connection, or for their `BEGIN`): the
    /// pool's waiters, which sqlx does not count (`db_pool_pending_acquires`).
    opening: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// Counts one transaction being opened while it lives (a cancelled request included).
struct Opening<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TenantPool {
    /// Wraps the pool of the API's role (`database.api_*`, docs/isolation.md).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            opening: Default::default(),
        }
    }

    /// Transactions being opened now (waiting for a connection or their `BEGIN`).
    pub fn opening(&self) -> i64 {
        self.opening.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A transaction in which only `tenant`'s rows exist. `BEGIN` and the setting travel in one
    /// round trip; the id is safe to quote (`TenantId` admits `[a-z0-9_-]` only).
    pub async fn begin(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin_as("BEGIN", tenant).await
    }

    /// A read-only transaction of `tenant` on one snapshot (repeatable read): every statement
    /// sees the same state, e.g. the read cache's versions and the answer computed after them.
    pub async fn begin_snapshot(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin_as("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", tenant)
            .await
    }

    async fn begin_as(
        &self,
        begin: &str,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.opening
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _opening = Opening(&self.opening);
        self.pool
            .begin_with(format!(
                "{begin}; SELECT set_config('{TENANT_SETTING}', '{}', true)",
                tenant.as_str()
            ))
            .await
    }

    /// The pool itself, for the isolation tests and the start-up check: nothing in the API
    /// queries through it without a tenant.
    pub fn unscoped(&self) -> &PgPool {
        &self.pool
    }
}

/// The tenant an aggregate belongs to: the tenant aggregate's id is the tenant's, every other
/// aggregate's is `tenant/uuid` (`domain::ids`).
pub fn tenant_of_aggregate(aggregate_id: &str) -> Option<TenantId> {
    let tenant = aggregate_id
        .split_once('/')
        .map_or(aggregate_id, |(t, _)| t);
    TenantId::parse(tenant).ok()
}

/// Why the pool's login could see past the policies, if it could: the start-up check refuses
/// to serve in production when this is not empty.
pub async fn bypass_reasons(pool: &TenantPool) -> Result<Vec<String>, sqlx::Error> {
    let row: (String, bool, bool, bool, bool) = sqlx::query_as(
        "SELECT session_user::text, \
           EXISTS (SELECT 1 FROM pg_roles r WHERE (r.rolsuper OR r.rolbypassrls) \
                     AND pg_has_role(session_user, r.oid, 'MEMBER')), \
           EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                    WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
                      AND pg_has_role(session_user, c.relowner, 'MEMBER')), \
           EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = 'answers_system' \
                     AND pg_has_role(session_user, r.oid, 'MEMBER')), \
           EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user \
                     AND (r.rolsuper OR r.rolbypassrls))",
    )
    .fetch_one(&pool.pool)
    .await?;
    let (login, bypass, owns, crosses, acting_bypasses) = row;
    let mut reasons = Vec::new();
    if bypass {
        reasons.push(format!(
            "the login `{login}` is (or can become) a superuser or a role with BYPASSRLS"
        ));
    }
    if owns {
        reasons.push(format!(
            "the login `{login}` owns tables (an owner can switch row-level security off)"
        ));
    }
    if crosses {
        reasons.push(format!(
            "the login `{login}` is a member of answers_system, which crosses tenants"
        ));
    }
    if acting_bypasses {
        reasons.push("the role it acts as bypasses row-level security".to_string());
    }
    Ok(reasons)
}
