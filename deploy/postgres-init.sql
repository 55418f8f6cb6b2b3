-- Run once by the postgres image when its data volume is first initialised (compose.yaml).
-- One database per service that owns a Postgres read side; no service reads another's.
CREATE DATABASE obey_auth;
CREATE DATABASE obey_content;
