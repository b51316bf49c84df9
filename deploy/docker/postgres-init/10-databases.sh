#!/bin/sh
# Runs once, on an empty data volume (docker-entrypoint-initdb.d): one role and one database for
# the job store (metarl) and one for MLflow's tracking/registry store (mlflow).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v metarl_pw="$JOBS_DB_PASSWORD" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE metarl LOGIN PASSWORD :'metarl_pw';
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE metarl OWNER metarl;
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE metarl FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
