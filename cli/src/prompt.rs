//! Reading a person's answers from stdin, for the interactive clients.

use std::io::{self, BufRead, IsTerminal, Write};

/// Reads answers from stdin, showing prompts only when a person is typing: a script piping input
/// gets nothing on stdout but the answers.
pub struct Prompter {
    lines: io::Lines<io::StdinLock<'static>>,
    show_prompts: bool,
}

impl Prompter {
    /// A prompter on this process's stdin.
    pub fn new() -> Self {
        let stdin = io::stdin();
        Prompter {
            show_prompts: stdin.is_terminal(),
            lines: stdin.lock().lines(),
        }
    }

    /// The next line, trimmed; `None` at end of input.
    pub fn ask(&mut self, prompt: &str) -> io::Result<Option<String>> {
        if self.show_prompts {
            print!("{prompt}");
            io::stdout().flush()?;
        }
        Ok(self
            .lines
            .next()
            .transpose()?
            .map(|line| line.trim().to_owned()))
    }

    /// Asks until `parse` accepts the answer, telling the person on stderr what `parse` said;
    /// `None` at end of input.
    pub fn ask_until<T>(
        &mut self,
        prompt: &str,
        mut parse: impl FnMut(&str) -> Result<T, String>,
    ) -> io::Result<Option<T>> {
        while let Some(answer) = self.ask(prompt)? {
            match parse(&answer) {
                Ok(value) => return Ok(Some(value)),
                Err(complaint) => eprintln!("{complaint}"),
            }
        }
        Ok(None)
    }

    /// Asks until the answer is yes or no; end of input counts as no.
    pub fn ask_yes_no(&mut self, prompt: &str) -> io::Result<bool> {
        let answer = self.ask_until(prompt, |answer| {
            match answer.to_ascii_lowercase().as_str() {
                "y" | "yes" => Ok(true),
                "n" | "no" => Ok(false),
                _ => Err("Please answer y or n.".to_owned()),
            }
        })?;
        Ok(answer.unwrap_or(false))
    }
}

/// Lines from stdin, read on a thread of their own so that a session can hear its server while
/// the user types; bounded, so a fast pipe waits for the session. The channel closes at the end
/// of the input.
pub fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (lines, receiver) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
