-- Tenant isolation in the database (docs/isolation.md). Every table that holds a tenant's rows
-- has row-level security enabled and FORCED (its owner is held to the policies too), with two
-- policies:
--   tenant_isolation  the API's role sees and writes only the rows of the tenant set for the
--                     current transaction (`SET LOCAL app.tenant_id`, by `TenantPool::begin`);
--                     with no tenant set it sees nothing and can write nothing.
--   cross_tenant      the role of the relay, projections, workers and the identity layer, which
--                     are explicit about crossing tenants.
-- Rows without a tenant (a platform operator's session, a dead letter of an unreadable message)
-- are visible to `answers_system` only.
--
-- Roles are cluster-wide: created here when missing (tests create many databases at once, hence
-- the duplicate handlers). Neither logs in: a deployment logs in as its own users, members of
-- these (docs/isolation.md, deployment). The API role owns nothing, is no superuser and cannot
-- bypass row-level security; the start-up check refuses to serve in production otherwise.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'answers_api') THEN
        BEGIN
            CREATE ROLE answers_api NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'answers_system') THEN
        BEGIN
            CREATE ROLE answers_system NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    -- The migrating owner runs the relay, projections and workers: it crosses tenants through
    -- `cross_tenant` (a superuser needs no membership).
    IF NOT pg_has_role(current_user, 'answers_system', 'USAGE') THEN
        BEGIN
            EXECUTE format('GRANT answers_system TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO answers_api, answers_system;

-- What the API does with each table. No default privileges: a table added later is invisible to
-- the API until its migration grants it, enables row-level security and adds the policies (the
-- isolation tests fail for a tenant table without them).
GRANT SELECT, INSERT ON events TO answers_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO answers_api;
GRANT SELECT ON rm_conversations, rm_audit, rm_questions, rm_sources, rm_tenants TO answers_api;
GRANT SELECT, INSERT ON audit_reads TO answers_api;
GRANT SELECT ON dead_letters TO answers_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON feedback_forwards, flag_exposures, flag_usage,
    sign_in_attempts, sessions, refresh_tokens, mfa_challenges, mfa_factors, mfa_recovery_codes,
    api_keys, webhook_endpoints, webhook_deliveries, inbound_secrets TO answers_api;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO answers_api;

GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO answers_system;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO answers_system;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'events', 'idempotency_keys', 'dead_letters', 'rm_conversations', 'rm_audit',
        'audit_reads', 'rm_questions', 'rm_sources', 'rm_tenants', 'feedback_forwards',
        'flag_exposures', 'flag_usage', 'sign_in_attempts', 'sessions', 'refresh_tokens',
        'mfa_challenges', 'mfa_factors', 'mfa_recovery_codes', 'api_keys', 'webhook_endpoints',
        'webhook_deliveries', 'inbound_secrets'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        -- current_setting(.., true) is NULL when never set and '' after a transaction that set
        -- it ended: both match no row.
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR ALL TO answers_api '
            'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), ''''))', t);
        EXECUTE format(
            'CREATE POLICY cross_tenant ON %I FOR ALL TO answers_system USING (true) WITH CHECK (true)',
            t);
    END LOOP;
END
$$;

-- A projection rebuild fills a copy of its tables and swaps it in; `LIKE .. INCLUDING ALL` copies
-- neither grants nor row-level security. The rebuild calls this on each copy before the swap, so
-- the table the API reads after it is held exactly as the one before.
CREATE FUNCTION answers_copy_security(live regclass, copy regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee,
               a.privilege_type
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid = live
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s', r.privilege_type, copy, r.grantee);
    END LOOP;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = live) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', copy);
    END IF;
    IF (SELECT relforcerowsecurity FROM pg_class WHERE oid = live) THEN
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', copy);
    END IF;
    FOR r IN
        SELECT p.polname,
               CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END AS kind,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS cmd,
               (SELECT string_agg(CASE WHEN role = 0 THEN 'PUBLIC' ELSE role::regrole::text END, ', ')
                  FROM unnest(p.polroles) AS role) AS roles,
               pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS checked
          FROM pg_policy p
         WHERE p.polrelid = live
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', r.polname, copy, r.kind,
                       r.cmd, r.roles,
                       CASE WHEN r.qual IS NULL THEN '' ELSE ' USING (' || r.qual || ')' END,
                       CASE WHEN r.checked IS NULL THEN '' ELSE ' WITH CHECK (' || r.checked || ')' END);
    END LOOP;
END
$$;
