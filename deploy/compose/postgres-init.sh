#!/bin/sh
# The API's login (docs/isolation.md): a member of answers_api only. The role is made here the
# way the migrations make it (they leave an existing one alone), so that the login can be
# granted it before the first migration runs.
set -eu
password=$(cat /run/secrets/api-database-password)
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" <<SQL
CREATE ROLE answers_api NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
CREATE ROLE answers_api_login LOGIN PASSWORD '$password' NOSUPERUSER NOBYPASSRLS IN ROLE answers_api;
SQL
