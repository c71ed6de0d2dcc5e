//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes. The
//! committed copy is `docs/openapi.json`; a test fails when the two drift apart
//! (`cargo run -p answers -- openapi > docs/openapi.json` refreshes it).
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    access, admin, analytics, audit, conversations, engine, flags, health, identity, inbound,
    observability, platform, sources, tenant, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Answers API",
        description = "Commands of the multi-tenant AI answers platform. Every command is stored as \
                       immutable events. Errors are RFC 7807 problems with a stable `code`.",
        version = "1.0.0"
    ),
    paths(
        health::live, health::ready, health::metrics, health::details,
        tenant::create, tenant::get_tenant, tenant::rename, tenant::set_kapa, tenant::set_quality_objectives, tenant::quality, tenant::set_answer_policy, tenant::set_flag,
        tenant::clear_flag, tenant::invite, tenant::change_role, tenant::remove_member,
        tenant::suspend, tenant::reactivate,
        conversations::start, conversations::follow_up, conversations::feedback,
        conversations::resolve, conversations::escalate, conversations::list, conversations::get_one,
        sources::add, sources::list, sources::get_source, sources::update, sources::remove,
        sources::request_sync, sources::start_sync, sources::complete_sync, sources::fail_sync,
        admin::status, admin::start_rebuild, admin::dead_letters, admin::retry,
        engine::engine_status, engine::feedback_forwards, engine::kapa_sources, engine::import_kapa_source, engine::retrieve,
        flags::evaluate_all, flags::report_usage, flags::flag_status, flags::operator_set, flags::operator_clear,
        audit::list, audit::export, audit::state_at, audit::raw_events, audit::reads,
        analytics::overview, analytics::cost,
        identity::jwks, identity::list_providers, identity::authorize, identity::callback, identity::mfa_verify,
        identity::mfa_enrol, identity::mfa_confirm, identity::refresh, identity::me, identity::list_sessions,
        identity::sign_out, identity::revoke_session,
        access::set_access_policy, access::revoke_member_sessions, access::reset_member_mfa,
        access::create_api_key, access::list_api_keys, access::revoke_api_key,
        platform::create_tenant, platform::suspend_tenant, platform::reactivate_tenant, platform::whoami, platform::set_plan, platform::clear_plan,
        observability::objectives, observability::trends,
        webhooks::add, webhooks::list, webhooks::remove, webhooks::rotate_secret, webhooks::enable,
        webhooks::deliveries, webhooks::redeliver, inbound::rotate_inbound_secret, inbound::source_sync,
    ),
    components(schemas(crate::sign_in::MfaRequired)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenant", description = "Administer the caller's tenant (admin)"),
        (name = "conversations", description = "Ask questions and rate answers"),
        (name = "sources", description = "Manage knowledge sources"),
        (name = "admin", description = "Operate the read side: projections, rebuilds, dead letters (admin)"),
        (name = "analytics", description = "Dashboards of the caller's tenant (any role)"),
        (name = "audit", description = "The audit trail for compliance reviews (admin; every read is recorded)"),
        (name = "health", description = "Liveness and readiness"),
        (name = "identity", description = "Sign-in (OpenID Connect, GitHub), sessions, second factors"),
        (name = "platform", description = "Platform operators: tenants across the platform"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "platform",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A platform operator's access token (signed in without a tenant), or the \
                         break-glass platform.operator_token; never a tenant's token",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document() -> Result<String, serde_json::Error> {
    let mut json = ApiDoc::openapi().to_pretty_json()?;
    json.push('\n');
    Ok(json)
}
