//! Files, stdin and stdout: sources opened (at a checkpoint's position when resuming, after
//! checking that the input is the one the checkpoint read) and sinks created or kept for a
//! resumed run to cut back.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};
use sluice_engine::checkpoint::InputDigest;
use sluice_engine::{
    InputFormat, OutputFormat, ParquetInput, ParquetSink, ParquetSource, Position, Resume, Sink,
    Source, StreamSink, StreamSource, TimeFormat,
};

/// The event time field and format, which a Parquet input checks and converts.
pub type TimeSpec<'a> = (&'a str, TimeFormat);

/// A source reading `path` in `format`: stdin for `-`. Stdin, a pipe or a terminal is live
/// (batches are also cut by time); a regular file is not. A Parquet file is read one row
/// group per batch.
pub fn open_source(
    path: &Path,
    format: InputFormat,
    time: TimeSpec<'_>,
) -> Result<Box<dyn Source>> {
    if format == InputFormat::Parquet {
        return Ok(Box::new(ParquetSource::new(open_parquet(path, time)?)));
    }
    Ok(Box::new(open_stream(path, format)?))
}

fn open_parquet(path: &Path, time: TimeSpec<'_>) -> Result<ParquetInput> {
    if path.as_os_str() == "-" {
        return Err(Error::Refused(
            "a Parquet input is read from a file (its footer is at the end), not from stdin".into(),
        ));
    }
    Ok(ParquetInput::open(path, time.0, time.1)?)
}

/// A Parquet output at `path`, written whole at the end of the run.
pub fn open_parquet_sink(path: &Path) -> Result<Box<dyn Sink>> {
    let sink = ParquetSink::create(path).map_err(Error::io("open output", path))?;
    Ok(Box::new(sink))
}

fn open_stream(path: &Path, format: InputFormat) -> Result<StreamSource> {
    let name = path.display().to_string();
    if path.as_os_str() == "-" {
        return Ok(StreamSource::new(Box::new(io::stdin()), name, format).live(true));
    }
    let f = File::open(path).map_err(Error::io("open input", path))?;
    let live = !f.metadata().map(|m| m.is_file()).unwrap_or(false);
    Ok(StreamSource::new(Box::new(f), name, format).live(live))
}

/// The source positioned where `resume` left it, once the file is known to be the input the
/// checkpoint read: at least as long, and with the same bytes at both ends of what was read
/// ([`InputDigest`]).
pub fn open_source_at(
    path: &Path,
    format: InputFormat,
    time: TimeSpec<'_>,
    resume: &Resume,
) -> Result<Box<dyn Source>> {
    if format == InputFormat::Parquet {
        let input = open_parquet(path, time)?;
        return Ok(Box::new(ParquetSource::resuming(
            input,
            &resume.position,
            resume.digest,
        )?));
    }
    Ok(Box::new(open_stream_at(path, format, resume)?))
}

fn open_stream_at(path: &Path, format: InputFormat, resume: &Resume) -> Result<StreamSource> {
    let Position::Stream { offset, line } = resume.position else {
        return Err(Error::Refused(
            "the checkpoint was taken on a partitioned source, not on a file; run with --fresh \
             to start over"
                .into(),
        ));
    };
    if path.as_os_str() == "-" {
        return Err(Error::Refused(
            "cannot resume from a checkpoint when reading stdin; give --input FILE or run with \
             --fresh"
                .into(),
        ));
    }
    let mut f = File::open(path).map_err(Error::io("open input", path))?;
    let len = f.metadata().map_err(Error::io("read input", path))?.len();
    let other = |what: String| {
        Error::Refused(format!(
            "input {} {what}: not the input the checkpoint was taken on; run with --fresh to \
             start over",
            path.display()
        ))
    };
    if len < offset {
        return Err(other(format!(
            "has {len} bytes but the checkpoint is at byte {offset}"
        )));
    }
    let digest = InputDigest::read(&mut f, offset).map_err(Error::io("read input", path))?;
    if let Some(expected) = resume.digest {
        if digest.value() != Some(expected) {
            return Err(other(format!(
                "differs from the checkpoint's in its first or last {} bytes before byte {offset}",
                InputDigest::SPAN
            )));
        }
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(Error::io("read input", path))?;
    let live = !f.metadata().map(|m| m.is_file()).unwrap_or(false);
    Ok(
        StreamSource::new(Box::new(f), path.display().to_string(), format)
            .live(live)
            .starting_at(offset, line, digest),
    )
}

/// A sink writing `path`: stdout for `-`, else a file, created empty or, for a resumed run
/// (`resuming`), kept as it is for the run to cut back to what the checkpoint had written.
/// `what` names it in errors ("output", "dead-letter file"). Also returns the file, for
/// others to sync.
pub fn open_sink(
    path: &Path,
    what: &str,
    resuming: bool,
    format: OutputFormat,
) -> Result<(Box<dyn Sink>, Option<File>)> {
    if path.as_os_str() == "-" {
        let stdout = StreamSink::new(Box::new(io::stdout()), what)
            .named("stdout")
            .with_format(format);
        return Ok((Box::new(stdout), None));
    }
    let f = if resuming {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    } else {
        File::create(path)
    }
    .map_err(Error::io(format!("open {what}"), path))?;
    let shared = f
        .try_clone()
        .map_err(Error::io(format!("open {what}"), path))?;
    let sink = StreamSink::file(f, what)
        .map_err(Error::io(format!("open {what}"), path))?
        .named(path.display().to_string())
        .with_format(format);
    Ok((Box::new(sink), Some(shared)))
}

/// Dead letters on stderr: a resumed run appends to it.
pub fn stderr_sink() -> Box<dyn Sink> {
    Box::new(StreamSink::appending(Box::new(io::stderr()), "dead letters").named("stderr"))
}
