//! `clarity-reconcile schema`: writes (or prints) the JSON Schemas of the config file kinds, the
//! plan and the host state: the same schemas that are checked in under `schemas/` and that
//! validate every file on load.

use super::{CliError, CliResult, Exit};
use crate::model::FileKind;
use clap::Args;
use std::path::PathBuf;

/// Write the JSON Schema of every config file kind (for editors via yaml-language-server, and
/// enforced by `validate`), of the plan (`--output json`) and of the agent's host state. Without `--out`, prints them as one JSON object.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Directory to write `<kind>.schema.json` files into.
    #[arg(long, value_name = "DIR", conflicts_with = "reference")]
    pub out: Option<PathBuf>,
    /// Print the config reference (Markdown, every field of every file kind) instead.
    #[arg(long)]
    pub reference: bool,
}

/// Every published schema: one per config file kind, plus the plan (`--output json`) and the
/// agent's host state.
pub fn all_schemas() -> Vec<(&'static str, String)> {
    let mut all: Vec<(&'static str, String)> = FileKind::ALL
        .iter()
        .map(|k| (k.schema_file(), k.schema_text()))
        .collect();
    all.push(("plan.schema.json", crate::plan::Plan::schema_text()));
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut host = serde_json::to_string_pretty(
        &generator.into_root_schema_for::<crate::model::host::ActualHost>(),
    )
    .expect("schema serializes");
    host.push('\n');
    all.push(("host-state.schema.json", host));
    all
}

pub fn run(args: &SchemaArgs) -> CliResult {
    if args.reference {
        print!("{}", crate::model::docs::config_reference());
        return Ok(Exit::Ok);
    }
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::from_error(&e).hint(format!("cannot create {}", dir.display()))
            })?;
            for (file, text) in all_schemas() {
                let path = dir.join(file);
                std::fs::write(&path, text).map_err(|e| {
                    CliError::new(format!("cannot write {}", path.display())).hint(e.to_string())
                })?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            let all: serde_json::Map<String, serde_json::Value> = all_schemas()
                .into_iter()
                .map(|(file, text)| {
                    (
                        file.to_string(),
                        serde_json::from_str(&text).expect("schemas are JSON"),
                    )
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&all).expect("serialize"));
        }
    }
    Ok(Exit::Ok)
}
