-- An example app migration, applied by iadb-server at start-up
-- (--app-migrations /migrations in docker-compose.yml). Replace it with your
-- own V{version}__{description}.sql files (and optional U{version}__...sql
-- undo files). Written for PostgreSQL; it also runs on SQLite and MySQL.
CREATE TABLE example_items (
    id BIGINT PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX example_items_name ON example_items (name);
