//! Embeds the system migrations (`../migrations/*.sql`) in the server binary:
//! writes `system_migrations.rs`, a list of `(file name, contents)` pairs.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            println!("cargo:rerun-if-changed={}", path.display());
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or("system migration file name is not UTF-8")?
                .to_owned();
            entries.push((name, fs::canonicalize(&path)?));
        }
    }
    entries.sort();
    let mut out = String::from(
        "/// System migrations: (file name, contents).\npub const SYSTEM_MIGRATIONS: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in entries {
        out.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("system_migrations.rs"),
        out,
    )?;
    Ok(())
}
