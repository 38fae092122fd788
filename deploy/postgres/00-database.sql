-- Run once per database, as a superuser, before any tenant:
--     psql -d app -v ON_ERROR_STOP=1 -f deploy/postgres/00-database.sql
--
-- Closes the database to everyone but the roles granted it one by one, closes the
-- public schema, and creates what shared tables with row-level security key on:
-- a role -> tenant map that only a SECURITY DEFINER function reads.

REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
REVOKE ALL ON SCHEMA public FROM PUBLIC;

-- Every tenant login role used with shared tables is a member of this group, which
-- holds the table privileges; row-level security keeps each to its own rows.
CREATE ROLE isogate_tenants NOLOGIN;

CREATE SCHEMA isogate;
REVOKE ALL ON SCHEMA isogate FROM PUBLIC;
CREATE TABLE isogate.tenant_roles (
    role   name PRIMARY KEY,
    tenant text NOT NULL
);
REVOKE ALL ON isogate.tenant_roles FROM PUBLIC;

-- The tenant of the session's login role. It reads session_user, which no SET ROLE,
-- RESET, set_config() or DISCARD changes, and only a superuser's SET SESSION
-- AUTHORIZATION could. NULL (no rows) for any role not in the map.
CREATE FUNCTION isogate.session_tenant() RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT tenant FROM isogate.tenant_roles WHERE role = session_user $$;
REVOKE ALL ON FUNCTION isogate.session_tenant() FROM PUBLIC;
GRANT USAGE ON SCHEMA isogate TO isogate_tenants;
GRANT EXECUTE ON FUNCTION isogate.session_tenant() TO isogate_tenants;
