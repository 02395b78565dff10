use super::{CliError, CliResult, Exit};
use crate::model::FileKind;
use clap::Args;
use std::path::PathBuf;

/// Write the JSON Schema of every config file kind (for editors via yaml-language-server, and
/// enforced by `validate`). Without `--out`, prints them as one JSON object.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Directory to write `<kind>.schema.json` files into.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The text of a schema file as checked in.
pub fn schema_text(kind: FileKind) -> String {
    let mut s = serde_json::to_string_pretty(&kind.schema()).expect("schemas serialize");
    s.push('\n');
    s
}

pub fn run(args: &SchemaArgs) -> CliResult {
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::from_error(&e).hint(format!("cannot create {}", dir.display()))
            })?;
            for kind in FileKind::ALL {
                let path = dir.join(kind.schema_file());
                std::fs::write(&path, schema_text(kind)).map_err(|e| {
                    CliError::new(format!("cannot write {}", path.display())).hint(e.to_string())
                })?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            let all: serde_json::Map<String, serde_json::Value> = FileKind::ALL
                .iter()
                .map(|k| (k.schema_file().to_string(), k.schema().to_value()))
                .collect();
            println!("{}", serde_json::to_string_pretty(&all).expect("serialize"));
        }
    }
    Ok(Exit::Ok)
}
