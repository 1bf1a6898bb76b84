//! `--about`: the tap's capabilities and settings in the Meltano SDK shape,
//! built from the one settings table in `config`.

use serde_json::{json, Map, Value};

use crate::cli::AboutFormat;
use crate::config::SETTINGS;

pub const NAME: &str = "tap-planetscale";
pub const DESCRIPTION: &str = "Singer tap for PlanetScale and Vitess: schema discovery over MySQL, full-table copy and change data capture (inserts, updates, deletes) over gRPC: PlanetScale Connect (`psdbconnect.v1alpha1.Connect/Sync`, the default) or vtgate's VStream (`vtgateservice.Vitess/VStream`, set `api` to `vstream`), which every Vitess cluster serves.";
pub const CAPABILITIES: &[&str] = &[
    "catalog",
    "properties",
    "discover",
    "state",
    "about",
    "activate-version",
    "log-based",
];

/// The SDK-shaped JSON document.
pub fn json_doc() -> Value {
    let mut props = Map::new();
    for s in SETTINGS {
        let mut p = Map::new();
        p.insert("type".into(), json!([s.kind, "null"]));
        p.insert("description".into(), json!(s.description));
        if let Some(d) = s.default {
            let v: Value = serde_json::from_str(d).unwrap_or_else(|_| json!(d));
            p.insert("default".into(), v);
        }
        if s.secret {
            p.insert("secret".into(), json!(true));
            p.insert("writeOnly".into(), json!(true));
        }
        props.insert(s.name.into(), Value::Object(p));
    }
    let required: Vec<&str> = SETTINGS
        .iter()
        .filter(|s| s.required)
        .map(|s| s.name)
        .collect();
    json!({
        "name": NAME,
        "description": DESCRIPTION,
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": CAPABILITIES,
        "settings": {
            "type": "object",
            "properties": props,
            "required": required,
            "$schema": "https://json-schema.org/draft/2020-12/schema",
        }
    })
}

/// Renders `--about` in the requested format (plain text when none).
pub fn render(format: Option<AboutFormat>) -> String {
    match format {
        Some(AboutFormat::Json) => {
            let mut s = serde_json::to_string_pretty(&json_doc()).unwrap_or_default();
            s.push('\n');
            s
        }
        Some(AboutFormat::Markdown) => {
            let mut s = format!(
                "# `{NAME}`\n\n{DESCRIPTION}\n\nBuilt with version {}.\n\n## Capabilities\n\n",
                env!("CARGO_PKG_VERSION")
            );
            for c in CAPABILITIES {
                s.push_str(&format!("* `{c}`\n"));
            }
            s.push_str("\n## Settings\n\n| Setting | Required | Default | Description |\n|:--------|:--------:|:-------:|:------------|\n");
            for st in SETTINGS {
                s.push_str(&format!(
                    "| {} | {} | {} | {}{} |\n",
                    st.name,
                    if st.required { "True" } else { "False" },
                    st.default.unwrap_or("None"),
                    st.description,
                    if st.secret { " (secret)" } else { "" }
                ));
            }
            s
        }
        None => {
            let mut s = format!("Name: {NAME}\nVersion: {}\nDescription: {DESCRIPTION}\nCapabilities: {}\nSettings:\n", env!("CARGO_PKG_VERSION"), CAPABILITIES.join(", "));
            for st in SETTINGS {
                s.push_str(&format!(
                    "  - {} ({}{})\n",
                    st.name,
                    st.kind,
                    if st.required { ", required" } else { "" }
                ));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_about_lists_every_setting() {
        let doc = json_doc();
        let props = doc["settings"]["properties"]
            .as_object()
            .expect("properties");
        assert_eq!(props.len(), SETTINGS.len());
        assert_eq!(props["password"]["secret"], json!(true));
        assert_eq!(props["tls"]["default"], json!(true));
        assert_eq!(props["timeout_seconds"]["default"], json!(90));
        assert_eq!(
            doc["settings"]["required"],
            json!(["host", "database", "username", "password"])
        );
        assert!(render(Some(AboutFormat::Markdown)).contains("| password | True | None |"));
    }
}
