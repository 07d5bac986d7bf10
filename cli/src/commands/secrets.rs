//! `ferry secrets`: the encrypted secrets file (`FERRY_SECRETS_FILE`).
//!
//! `encrypt` turns a plaintext TOML file into the encrypted one, `decrypt`
//! prints it, `edit` opens it in `$EDITOR` through a private temporary file,
//! `rotate` re-encrypts it under a new password and `check` verifies it
//! without printing a value. The password is `SECURE_CONFIG_PASSWORD` (asked
//! on the terminal when unset). Every write is atomic and mode 0600: on any
//! error the file is left as it was. The format is in
//! `ferry_common::secrets_file`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferry_common::Secret;
use ferry_common::config::vars;
use ferry_common::secrets_file::{self, KdfParams, Secrets};
use zeroize::Zeroizing;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Encrypt a plaintext TOML file of secrets (`NAME = "value"`, or an
    /// array of keys used in turn).
    Encrypt {
        /// The plaintext TOML file (delete it afterwards).
        input: PathBuf,
        /// The encrypted file to write.
        #[arg(short, long, env = "FERRY_SECRETS_FILE")]
        output: PathBuf,
        /// Replace the output if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the decrypted secrets to stdout (a warning goes to stderr).
    Decrypt {
        #[arg(env = "FERRY_SECRETS_FILE")]
        file: PathBuf,
    },
    /// Edit the secrets in $EDITOR through a private temporary file, then
    /// re-encrypt them if they changed.
    Edit {
        #[arg(env = "FERRY_SECRETS_FILE")]
        file: PathBuf,
    },
    /// Re-encrypt under a new password (FERRY_NEW_SECURE_CONFIG_PASSWORD,
    /// else asked); on any error the file is untouched.
    Rotate {
        #[arg(env = "FERRY_SECRETS_FILE")]
        file: PathBuf,
    },
    /// Verify the file decrypts and names only Ferry variables; prints
    /// names and counts, never values.
    Check {
        #[arg(env = "FERRY_SECRETS_FILE")]
        file: PathBuf,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Encrypt {
            input,
            output,
            force,
        } => {
            let password = password_for_new_file(vars::SECURE_CONFIG_PASSWORD)?;
            let encrypted = encrypt(&input, &output, &password, force)?;
            for name in &encrypted.unknown {
                eprintln!("warning: {name} is not a variable Ferry reads (ignored when loading)");
            }
            println!(
                "{}: {} names encrypted (mode 0600). Now delete {} (e.g. shred -u).",
                output.display(),
                encrypted.names,
                input.display()
            );
        }
        Command::Decrypt { file } => {
            let text = decrypt(&file, &password()?)?;
            eprintln!(
                "warning: printing secrets in plain text; keep them out of files, logs and scrollback"
            );
            print!("{}", text.as_str());
        }
        Command::Edit { file } => {
            let password = password()?;
            let edited = edit(&file, &password, &editor(), ask_to_edit_again)?;
            match edited {
                Edited::Changed => println!("{}: re-encrypted", file.display()),
                Edited::Unchanged => println!("{}: no change, left as it was", file.display()),
            }
        }
        Command::Rotate { file } => {
            let old = password()?;
            // Checked before asking for the new one.
            secrets_file::decrypt_file(&file, &old)?;
            let new = password_for_new_file(vars::FERRY_NEW_SECURE_CONFIG_PASSWORD)?;
            rotate(&file, &old, &new)?;
            println!(
                "{}: re-encrypted under the new password. Set {} to it wherever api and worker run, then restart them one by one (running processes keep the secrets they loaded; SIGHUP cannot pick up a new password).",
                file.display(),
                vars::SECURE_CONFIG_PASSWORD
            );
        }
        Command::Check { file } => {
            let report = check(&file, &password()?)?;
            print!("{report}");
            if !report.is_ok() {
                bail!(
                    "{}: {} problem(s), see above",
                    file.display(),
                    report.problems()
                );
            }
        }
    }
    Ok(())
}

/// What `encrypt` wrote.
#[derive(Debug)]
pub struct Encrypted {
    pub names: usize,
    /// Names Ferry does not read (written anyway; `check` fails on them).
    pub unknown: Vec<String>,
}

/// Encrypts the plaintext TOML `input` into `output`.
pub fn encrypt(
    input: &Path,
    output: &Path,
    password: &Secret,
    force: bool,
) -> anyhow::Result<Encrypted> {
    if output.exists() && !force {
        bail!(
            "{} exists: use `ferry secrets edit` to change it, or --force to replace it",
            output.display()
        );
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(input)
            .with_context(|| format!("cannot read {}", input.display()))?,
    );
    let secrets = Secrets::parse(&text).with_context(|| input.display().to_string())?;
    secrets_file::encrypt_to_file(output, &text, password, KdfParams::default())?;
    Ok(Encrypted {
        names: secrets.len(),
        unknown: secrets
            .names()
            .filter(|n| problem(n).is_some())
            .map(str::to_owned)
            .collect(),
    })
}

/// The plaintext TOML of `file`.
pub fn decrypt(file: &Path, password: &Secret) -> anyhow::Result<Zeroizing<String>> {
    let opened =
        secrets_file::decrypt_file(file, password).with_context(|| file.display().to_string())?;
    Ok(opened.text)
}

/// Whether `edit` wrote a new file.
#[derive(Debug, PartialEq, Eq)]
pub enum Edited {
    Changed,
    Unchanged,
}

/// Decrypts `file` into a 0600 file in a private (0700) temporary directory
/// (in RAM under /dev/shm when there is one), runs `editor` on it, and
/// re-encrypts it if it changed. Invalid TOML is refused, and
/// `edit_again` decides whether to reopen the editor. The temporary copy is
/// overwritten and removed on every path out.
pub fn edit(
    file: &Path,
    password: &Secret,
    editor: &str,
    mut edit_again: impl FnMut(&anyhow::Error) -> bool,
) -> anyhow::Result<Edited> {
    let opened =
        secrets_file::decrypt_file(file, password).with_context(|| file.display().to_string())?;
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("ferry-secrets-");
    let dir = if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .context("cannot create a private temporary directory")?;
    let plain = PlainCopy(dir.path().join("secrets.toml"));
    secrets_file::write_atomic(&plain.0, opened.text.as_bytes())
        .context("cannot write the temporary copy")?;
    let edited = loop {
        run_editor(editor, &plain.0)?;
        let edited = Zeroizing::new(
            std::fs::read_to_string(&plain.0).context("cannot read the edited copy back")?,
        );
        match Secrets::parse(&edited) {
            Ok(_) => break edited,
            Err(e) => {
                let err = anyhow::Error::new(e).context("the edited secrets were not saved");
                if !edit_again(&err) {
                    return Err(err);
                }
            }
        }
    };
    if *edited == *opened.text {
        return Ok(Edited::Unchanged);
    }
    secrets_file::encrypt_to_file(file, &edited, password, opened.params)?;
    Ok(Edited::Changed)
}

/// The plaintext copy `edit` works on: overwritten before its directory is
/// removed.
struct PlainCopy(PathBuf);

impl Drop for PlainCopy {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::metadata(&self.0) {
            let _ = std::fs::write(&self.0, vec![0u8; meta.len() as usize]);
        }
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run_editor(editor: &str, path: &Path) -> anyhow::Result<()> {
    // Through the shell, so EDITOR may carry arguments (`code --wait`).
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .with_context(|| format!("cannot run the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} failed ({status}); nothing was saved");
    }
    Ok(())
}

/// `$VISUAL`, else `$EDITOR`, else `vi`.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".into())
}

fn ask_to_edit_again(err: &anyhow::Error) -> bool {
    eprintln!("{err:#}");
    match prompt("Edit again? [Y/n] ", true) {
        Ok(answer) => matches!(answer.trim(), "" | "y" | "Y" | "yes"),
        Err(_) => false,
    }
}

/// Re-encrypts `file` under `new`: decrypted with `old` first, written
/// atomically, so any failure leaves the file as it was.
pub fn rotate(file: &Path, old: &Secret, new: &Secret) -> anyhow::Result<()> {
    if new.expose().is_empty() {
        bail!("the new password is empty");
    }
    if new == old {
        bail!("the new password is the old one");
    }
    let opened =
        secrets_file::decrypt_file(file, old).with_context(|| file.display().to_string())?;
    let params = KdfParams {
        memory_kib: opened
            .params
            .memory_kib
            .max(KdfParams::OWASP_MIN.memory_kib),
        iterations: opened
            .params
            .iterations
            .max(KdfParams::OWASP_MIN.iterations),
        parallelism: opened.params.parallelism,
    };
    secrets_file::encrypt_to_file(file, &opened.text, new, params)?;
    Ok(())
}

/// What `check` found: names and counts only.
#[derive(Debug)]
pub struct CheckReport {
    pub path: PathBuf,
    pub params: KdfParams,
    /// Each name, its number of values, and what is wrong with it.
    pub entries: Vec<(String, usize, Option<&'static str>)>,
    /// The file's mode lets others than its owner read it.
    pub readable_by_others: bool,
}

impl CheckReport {
    pub fn problems(&self) -> usize {
        self.entries.iter().filter(|e| e.2.is_some()).count()
    }

    pub fn is_ok(&self) -> bool {
        self.problems() == 0
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.params;
        writeln!(
            f,
            "{}: decrypts (argon2id m={} t={} p={}), {} names",
            self.path.display(),
            p.memory_kib,
            p.iterations,
            p.parallelism,
            self.entries.len()
        )?;
        for (name, count, problem) in &self.entries {
            let status = match (problem, count) {
                (Some(problem), _) => format!("ERROR: {problem}"),
                (None, 0) => "empty (unset)".into(),
                (None, 1) => "set".into(),
                (None, n) => format!("{n} values, used in turn"),
            };
            writeln!(f, "  {name:<40} {status}")?;
        }
        if self.readable_by_others {
            writeln!(
                f,
                "warning: others than its owner may read it: chmod 600 {}",
                self.path.display()
            )?;
        }
        Ok(())
    }
}

/// Decrypts `file` and checks every name in it.
pub fn check(file: &Path, password: &Secret) -> anyhow::Result<CheckReport> {
    let opened =
        secrets_file::decrypt_file(file, password).with_context(|| file.display().to_string())?;
    let secrets = Secrets::parse(&opened.text).with_context(|| file.display().to_string())?;
    let entries = secrets
        .names()
        .map(|name| {
            let count = secrets.get(name).map_or(0, <[Secret]>::len);
            (name.to_owned(), count, problem(name))
        })
        .collect();
    Ok(CheckReport {
        path: file.to_path_buf(),
        params: opened.params,
        entries,
        readable_by_others: secrets_file::readable_by_others(file).unwrap_or(false),
    })
}

fn problem(name: &str) -> Option<&'static str> {
    if vars::NOT_IN_SECRETS_FILE.contains(&name) {
        Some("cannot be set from the secrets file")
    } else if !vars::is_known(name) {
        Some("not a variable Ferry reads")
    } else {
        None
    }
}

/// `SECURE_CONFIG_PASSWORD`, else asked on the terminal.
fn password() -> anyhow::Result<Secret> {
    if let Some(pw) = env_password(vars::SECURE_CONFIG_PASSWORD) {
        return Ok(pw);
    }
    let pw = prompt(&format!("{}: ", vars::SECURE_CONFIG_PASSWORD), false)
        .with_context(|| format!("{} is not set", vars::SECURE_CONFIG_PASSWORD))?;
    Ok(Secret::new(pw.as_str()))
}

/// A password for a new file: `var`, else asked twice on the terminal.
fn password_for_new_file(var: &str) -> anyhow::Result<Secret> {
    if let Some(pw) = env_password(var) {
        return Ok(pw);
    }
    let first =
        prompt(&format!("{var} (new): "), false).with_context(|| format!("{var} is not set"))?;
    let again = prompt(&format!("{var} (again): "), false)?;
    if first.is_empty() {
        bail!("{var}: the password is empty");
    }
    if first != again {
        bail!("{var}: the two passwords differ");
    }
    Ok(Secret::new(first.as_str()))
}

fn env_password(var: &str) -> Option<Secret> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::from)
}

/// Asks on the terminal (not stdin, which may be a pipe), without echo
/// unless `echo`.
fn prompt(question: &str, echo: bool) -> anyhow::Result<Zeroizing<String>> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    use std::io::{BufRead, Write};

    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| anyhow::anyhow!("there is no terminal to ask on"))?;
    (&tty).write_all(question.as_bytes())?;
    (&tty).flush()?;
    let saved = tcgetattr(&tty).context("cannot read the terminal's settings")?;
    if !echo {
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&tty, OptionalActions::Now, &quiet)?;
    }
    let mut line = Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if !echo {
        let _ = tcsetattr(&tty, OptionalActions::Now, &saved);
        let _ = (&tty).write_all(b"\n");
    }
    read.context("cannot read from the terminal")?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    Ok(trimmed)
}
