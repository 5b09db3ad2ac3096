//! `cli demo`: each system started on a free loopback port, exercised, shown and stopped.

mod addressbook;
mod chat;
mod forum;
mod p2p;
mod record;

use std::process::ExitCode;
use std::time::Duration;

use super::runtime;
use crate::logging;

/// How long any one step of the demo may take before it is reported as a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the demo of every system built so far.
pub fn run() -> anyhow::Result<ExitCode> {
    logging::init("warn");
    let runtime = runtime()?;
    runtime.block_on(record::demo())?;
    println!();
    runtime.block_on(addressbook::demo())?;
    println!();
    runtime.block_on(forum::demo())?;
    println!();
    runtime.block_on(chat::demo())?;
    println!();
    runtime.block_on(chat::transfer_demo())?;
    println!();
    runtime.block_on(p2p::demo())?;
    Ok(ExitCode::SUCCESS)
}

/// Bytes as a Python bytes literal, the way the seed's programs would print them: in double
/// quotes, or in single quotes when the bytes hold double quotes and no single ones.
pub(super) fn show(bytes: &[u8]) -> String {
    let quote = if bytes.contains(&b'"') && !bytes.contains(&b'\'') {
        b'\''
    } else {
        b'"'
    };
    let mut text = format!("b{}", char::from(quote));
    for &byte in bytes {
        match byte {
            b'"' | b'\'' if byte != quote => text.push(char::from(byte)),
            _ => text.extend(byte.escape_ascii().map(char::from)),
        }
    }
    text.push(char::from(quote));
    text
}
