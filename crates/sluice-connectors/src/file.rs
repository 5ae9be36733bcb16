//! Files, stdin and stdout: inputs opened (at a checkpoint's position when resuming) and
//! outputs created or cut back to what a checkpoint had written.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// An input: stdin for `-`, else the file.
pub fn open_input(path: &Path) -> Result<Box<dyn io::Read + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let f = File::open(path).with_context(|| format!("cannot open input {}", path.display()))?;
    Ok(Box::new(f))
}

/// The input, positioned at `offset` (a resumed run).
pub fn open_input_at(path: &Path, offset: u64) -> Result<Box<dyn io::Read + Send>> {
    if path.as_os_str() == "-" {
        bail!("cannot resume from a checkpoint when reading stdin; give --input FILE or run with --fresh");
    }
    let mut f =
        File::open(path).with_context(|| format!("cannot open input {}", path.display()))?;
    let len = f.metadata()?.len();
    if len < offset {
        bail!(
            "input {} has {len} bytes but the checkpoint is at byte {offset}: not the input the \
             checkpoint was taken on; run with --fresh to start over",
            path.display()
        );
    }
    f.seek(SeekFrom::Start(offset))?;
    Ok(Box::new(f))
}

/// An output: stdout for `-`, else a file, created empty or, when resuming, cut back to
/// `keep` bytes and appended to. Also returns the file, to sync it at checkpoints.
pub fn open_output(
    path: &Path,
    what: &str,
    keep: Option<u64>,
) -> Result<(Box<dyn Write + Send>, Option<File>)> {
    if path.as_os_str() == "-" {
        if keep.is_some_and(|k| k > 0) {
            bail!("cannot resume into stdout: the {what} written before the checkpoint cannot be taken back; write it to a file or run with --fresh");
        }
        return Ok((
            Box::new(BufWriter::with_capacity(1 << 20, io::stdout())),
            None,
        ));
    }
    let f = match keep {
        None => File::create(path),
        Some(_) => OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path),
    }
    .with_context(|| format!("cannot open {what} {}", path.display()))?;
    if let Some(keep) = keep {
        let len = f.metadata()?.len();
        if len < keep {
            bail!(
                "{what} {} has {len} bytes but the checkpoint wrote {keep}: it was changed since; \
                 run with --fresh to start over",
                path.display()
            );
        }
        f.set_len(keep)?;
    }
    let mut writer = f.try_clone()?;
    writer.seek(SeekFrom::End(0))?;
    Ok((Box::new(BufWriter::with_capacity(1 << 20, writer)), Some(f)))
}
