-- Shared tables with row-level security: run after 10-tenant-role.sql,
--     psql -d app -v ON_ERROR_STOP=1 -v tenant=acme -f deploy/postgres/30-tenant-rows.sql
--
-- Maps the tenant's login role to its tenant id and grants the group that holds the
-- shared tables' privileges. Each shared table (owned by another role) then gets:
--
--     ALTER TABLE shared.orders ENABLE ROW LEVEL SECURITY;
--     ALTER TABLE shared.orders FORCE ROW LEVEL SECURITY;
--     CREATE POLICY tenant_rows ON shared.orders
--         USING (tenant_id = isogate.session_tenant())
--         WITH CHECK (tenant_id = isogate.session_tenant());
--     GRANT SELECT, INSERT, UPDATE, DELETE ON shared.orders TO isogate_tenants;

\set role 'tenant_' :tenant
INSERT INTO isogate.tenant_roles (role, tenant) VALUES (:'role', :'tenant');
GRANT isogate_tenants TO :"role";
