//! Finding and reading export files on disk: zips, or folders holding export.bin + export.sig.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gaen::ExportFiles;

/// One export on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportSource {
    Zip(PathBuf),
    /// A folder with `export.bin` and `export.sig`, as an unpacked zip.
    Folder(PathBuf),
}

impl ExportSource {
    pub fn path(&self) -> &Path {
        match self {
            Self::Zip(path) | Self::Folder(path) => path,
        }
    }

    /// Reads the export's two members; the error names the file.
    pub fn load(&self) -> Result<ExportFiles> {
        match self {
            Self::Zip(path) => {
                let zip =
                    fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                ExportFiles::from_zip(&zip).with_context(|| format!("{}", path.display()))
            }
            Self::Folder(dir) => {
                let read = |name: &str| {
                    let path = dir.join(name);
                    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
                };
                Ok(ExportFiles {
                    bin: read("export.bin")?,
                    sig: read("export.sig")?,
                })
            }
        }
    }
}

/// A single export named on the command line: a zip file or an unpacked folder.
pub fn single(path: &Path) -> Result<ExportSource> {
    if path.is_dir() {
        if is_unpacked_export(path) {
            return Ok(ExportSource::Folder(path.to_owned()));
        }
        bail!(
            "{} is a folder without export.bin and export.sig",
            path.display()
        );
    }
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(ExportSource::Zip(path.to_owned()))
}

/// Every export under the given paths: files are taken as zips; folders are searched
/// recursively, in name order, for `*.zip` files and unpacked exports.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<ExportSource>> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found)?;
        } else {
            found.push(single(path)?);
        }
    }
    Ok(found)
}

fn is_unpacked_export(dir: &Path) -> bool {
    dir.join("export.bin").is_file() && dir.join("export.sig").is_file()
}

fn walk(dir: &Path, found: &mut Vec<ExportSource>) -> Result<()> {
    if is_unpacked_export(dir) {
        found.push(ExportSource::Folder(dir.to_owned()));
    }
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, found)?;
        } else if entry
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
        {
            found.push(ExportSource::Zip(entry));
        }
    }
    Ok(())
}
