-- iadb's own key/value settings, one row per key (for example the schema
-- generation of iadb's system tables). Portable across every engine.
CREATE TABLE IF NOT EXISTS ia_settings (
    setting_key VARCHAR(128) NOT NULL PRIMARY KEY,
    setting_value TEXT
);
