-- Schema per tenant (db_schema = "company_{tenant}"): run after 10-tenant-role.sql,
--     psql -d app -v ON_ERROR_STOP=1 -v tenant=acme -f deploy/postgres/20-tenant-schema.sql
--
-- The tenant's role owns its schema and has no USAGE on any other tenant's, so no
-- search_path change, SET ROLE or set_config() reaches another schema: PostgreSQL
-- checks the privilege of the login role, which the client cannot change.

\set role 'tenant_' :tenant
\set schema 'company_' :tenant
CREATE SCHEMA :"schema" AUTHORIZATION :"role";
