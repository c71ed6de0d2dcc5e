-- The read cache's keys (docs/read-cache.md): for each tenant and projection, a version that
-- changes whenever an event of that tenant is applied, in the transaction that applies it, and
-- for every tenant when a rebuild swaps the projection in. Versions come from one sequence, so
-- a value is never given twice (not even by a rolled-back transaction): a cached answer keyed by
-- a version can never be mistaken for the answer of a later state.
CREATE SEQUENCE read_model_version_seq;

CREATE TABLE read_model_versions (
    tenant_id  text   NOT NULL,
    projection text   NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (tenant_id, projection)
);

-- The API reads its tenant's versions; the projections (answers_system) write them.
GRANT SELECT ON read_model_versions TO answers_api;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON read_model_versions TO answers_system;
GRANT USAGE, SELECT, UPDATE ON read_model_version_seq TO answers_system;

ALTER TABLE read_model_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE read_model_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON read_model_versions FOR ALL TO answers_api
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
CREATE POLICY cross_tenant ON read_model_versions FOR ALL TO answers_system
    USING (true) WITH CHECK (true);
