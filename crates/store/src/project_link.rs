//! `.agentsecrets/project.json`: the file that links a working directory to a project.

use std::path::{Path, PathBuf};

use crate::home::write_private;
use crate::{Result, StoreError};

const LINK_DIR: &str = ".agentsecrets";
const LINK_FILE: &str = "project.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Link {
    project: String,
}

/// The project named by the nearest link file at or above `cwd`, if any.
pub fn find(cwd: &Path) -> Result<Option<String>> {
    for dir in cwd.ancestors() {
        let path = dir.join(LINK_DIR).join(LINK_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let link: Link = serde_json::from_str(&text).map_err(|e| {
            StoreError::Invalid(format!(
                "{}: not a project link ({e}); fix it or run: agentsecrets project use NAME",
                path.display()
            ))
        })?;
        return Ok(Some(link.project));
    }
    Ok(None)
}

/// Links `dir` to `project` by writing `dir/.agentsecrets/project.json`.
pub fn write(dir: &Path, project: &str) -> Result<PathBuf> {
    let link_dir = dir.join(LINK_DIR);
    std::fs::create_dir_all(&link_dir)
        .map_err(|source| StoreError::Io { path: link_dir.clone(), source })?;
    let path = link_dir.join(LINK_FILE);
    let body = serde_json::to_vec_pretty(&Link { project: project.to_owned() })
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    write_private(&path, &body)?;
    Ok(path)
}
