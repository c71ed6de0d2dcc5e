//! What the API reads from the audit trail: pages, exports, and the record of its own reads.
use chrono::{DateTime, Utc};
use domain::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use domain::AggregateType;

use super::{AuditEntry, AuditOutcome};

/// Filters of the trail; all optional, combined with AND.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Acted by this user.
    pub actor: Option<String>,
    /// This event type.
    pub action: Option<String>,
    /// On this kind of object.
    pub object_type: Option<String>,
    /// On this object.
    pub object_id: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// One page of the tenant's trail in position order, after `after_position`.
pub async fn page(
    conn: &mut PgConnection,
    tenant: &TenantId,
    filter: &AuditFilter,
    after_position: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as!(
        AuditEntry,
        r#"SELECT event_id, position, recorded_at, actor_id, actor_role, action,
             object_type AS "object_type: AggregateType", object_id, sequence, correlation_id,
             causation_id, outcome AS "outcome: AuditOutcome", details
           FROM rm_audit
           WHERE tenant_id = $1 AND position > $2
             AND ($3::text IS NULL OR actor_id = $3) AND ($4::text IS NULL OR action = $4)
             AND ($5::text IS NULL OR object_type = $5) AND ($6::text IS NULL OR object_id = $6)
             AND ($7::timestamptz IS NULL OR recorded_at >= $7)
             AND ($8::timestamptz IS NULL OR recorded_at < $8)
           ORDER BY position LIMIT $9"#,
        tenant.as_str(),
        after_position,
        filter.actor.as_deref(),
        filter.action.as_deref(),
        filter.object_type.as_deref(),
        filter.object_id.as_deref(),
        filter.from,
        filter.to,
        limit,
    )
    .fetch_all(&mut *conn)
    .await
}

/// The header line of a CSV export.
pub const CSV_HEADER: &str =
    "position,recorded_at,actor_id,actor_role,action,object_type,object_id,sequence,correlation_id,outcome,event_id\n";

/// A field as CSV. A value a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return: CSV injection, OWASP) is neutralised with a leading `'`:
/// actor ids and object ids come from users.
fn csv_field(value: &str) -> String {
    let neutralised;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        neutralised = format!("'{value}");
        neutralised.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

impl AuditEntry {
    /// The entry as a CSV line.
    pub fn csv_line(&self) -> String {
        let fields = [
            self.position.to_string(),
            self.recorded_at.to_rfc3339(),
            self.actor_id.clone(),
            self.actor_role.clone(),
            self.action.clone(),
            self.object_type.to_string(),
            self.object_id.clone(),
            self.sequence.to_string(),
            self.correlation_id.clone(),
            self.outcome.to_string(),
            self.event_id.to_string(),
        ];
        let mut line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        line
    }
}

/// Records that `actor` read the trail (route and query), before the read is answered.
pub async fn record_read(
    conn: &mut PgConnection,
    tenant: &TenantId,
    actor: &str,
    role: &str,
    route: &str,
    query: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_reads (tenant_id, actor_id, actor_role, route, query) VALUES ($1, $2, $3, $4, $5)",
        tenant.as_str(),
        actor,
        role,
        route,
        query,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A read of the trail, recorded.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditRead {
    /// Its sequence number.
    pub id: i64,
    /// Who read.
    pub actor_id: String,
    /// In which role.
    pub actor_role: String,
    /// Which route.
    pub route: String,
    /// With which query string.
    pub query: String,
    /// When.
    pub read_at: DateTime<Utc>,
}

/// The tenant's recorded reads of the trail, newest first.
pub async fn reads(
    conn: &mut PgConnection,
    tenant: &TenantId,
    limit: i64,
) -> Result<Vec<AuditRead>, sqlx::Error> {
    sqlx::query_as!(
        AuditRead,
        "SELECT id, actor_id, actor_role, route, query, read_at FROM audit_reads WHERE tenant_id = $1
         ORDER BY id DESC LIMIT $2",
        tenant.as_str(),
        limit,
    )
    .fetch_all(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn csv_fields_never_start_a_formula() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        for start in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(
                csv_field(start).trim_start_matches('"').starts_with('\''),
                "{start:?}"
            );
        }
        assert_eq!(csv_field("alice"), "alice");
    }
}
