-- Run once per tenant, as a superuser: the login role isogate signs in as for the
-- tenant (the target's user template, here "tenant_{tenant}"), with the password
-- isogate derives from the target's master secret:
--
--     role=tenant_acme
--     password=$(printf %s "$role" | openssl dgst -sha256 -hmac "$MASTER_SECRET" -r | cut -d' ' -f1)
--     psql -d app -v ON_ERROR_STOP=1 -v tenant=acme -v password="$password" \
--          -f deploy/postgres/10-tenant-role.sql
--
-- The role holds no privilege beyond its database: no superuser, no role creation, no
-- membership it could SET ROLE to (except isogate_tenants, for shared tables).
-- Tenant ids must be lowercase letters, digits and `_` (isogate refuses others).

\set role 'tenant_' :tenant
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'password';
GRANT CONNECT, TEMPORARY ON DATABASE :"DBNAME" TO :"role";
