//! One thread's file: line 1 the creator, then `N user: text` message lines (numbered from 1 in
//! order, renumbered when one is deleted) and `user uploaded filename` lines (not numbered), each
//! line ending in a newline.

use std::fmt::Write as _;

/// One line after the creator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A message.
    Message {
        /// Who posted it.
        author: String,
        /// What it says.
        text: String,
    },
    /// A file upload.
    Upload {
        /// Who uploaded it.
        user: String,
        /// The file's name in the thread.
        file: String,
    },
}

/// A thread as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// Who created it.
    pub creator: String,
    /// Its messages and uploads, in order.
    pub entries: Vec<Entry>,
}

impl Thread {
    /// A new, empty thread.
    pub fn new(creator: &str) -> Thread {
        Thread {
            creator: creator.to_owned(),
            entries: Vec::new(),
        }
    }

    /// Reads a thread file; `Err` names the first line that fits neither form.
    pub fn parse(text: &str) -> Result<Thread, String> {
        let mut lines = text.lines();
        let creator = lines
            .next()
            .filter(|line| !line.trim().is_empty())
            .ok_or("the file has no creator line")?;
        let mut thread = Thread::new(creator.trim());
        for (index, line) in lines.enumerate() {
            let entry = parse_entry(line).ok_or_else(|| format!("line {}: {line:?}", index + 2))?;
            thread.entries.push(entry);
        }
        Ok(thread)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = format!("{}\n", self.creator);
        for line in self.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        text
    }

    /// The lines after the creator's, as RDT shows them.
    pub fn lines(&self) -> Vec<String> {
        let mut number = 0;
        self.entries
            .iter()
            .map(|entry| match entry {
                Entry::Message { author, text } => {
                    number += 1;
                    let mut line = String::new();
                    let _ = write!(line, "{number} {author}: {text}");
                    line
                }
                Entry::Upload { user, file } => format!("{user} uploaded {file}"),
            })
            .collect()
    }

    /// How many messages there are.
    pub fn message_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| matches!(entry, Entry::Message { .. }))
            .count()
    }

    /// The index in `entries` of message `number` (from 1), with its author.
    pub fn message(&self, number: usize) -> Option<(usize, &str)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match entry {
                Entry::Message { author, .. } => Some((index, author.as_str())),
                Entry::Upload { .. } => None,
            })
            .nth(number.checked_sub(1)?)
    }

    /// Whether `file` was uploaded to this thread.
    pub fn has_upload(&self, file: &str) -> bool {
        self.entries
            .iter()
            .any(|entry| matches!(entry, Entry::Upload { file: f, .. } if f == file))
    }
}

fn parse_entry(line: &str) -> Option<Entry> {
    let (first, rest) = line.split_once(' ')?;
    if first.bytes().all(|b| b.is_ascii_digit()) {
        if let Some((author, text)) = rest.split_once(": ") {
            if !author.is_empty() && !author.contains(' ') {
                return Some(Entry::Message {
                    author: author.to_owned(),
                    text: text.to_owned(),
                });
            }
        }
    }
    let file = rest.strip_prefix("uploaded ")?;
    (!file.is_empty() && !file.contains(' ')).then(|| Entry::Upload {
        user: first.to_owned(),
        file: file.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Yoda\n1 Yoda: Do or do not, there is no try\n\
                          Obi-wan uploaded test.exe\n2 Obi-wan: Hello there\n";

    #[test]
    fn a_thread_file_round_trips() {
        let thread = Thread::parse(SAMPLE).unwrap();
        assert_eq!(thread.creator, "Yoda");
        assert_eq!(thread.message_count(), 2);
        assert_eq!(thread.message(2), Some((2, "Obi-wan")));
        assert_eq!(thread.message(3), None);
        assert_eq!(thread.message(0), None);
        assert!(thread.has_upload("test.exe"));
        assert_eq!(thread.render(), SAMPLE);
    }

    #[test]
    fn deleting_a_message_renumbers_the_later_ones() {
        let mut thread = Thread::parse(SAMPLE).unwrap();
        let (index, _) = thread.message(1).unwrap();
        thread.entries.remove(index);
        assert_eq!(
            thread.lines(),
            ["Obi-wan uploaded test.exe", "1 Obi-wan: Hello there"]
        );
    }

    #[test]
    fn lines_that_fit_no_form_are_reported() {
        assert!(Thread::parse("").is_err());
        let err = Thread::parse("Yoda\n1 Yoda: fine\nnonsense\n").unwrap_err();
        assert!(err.starts_with("line 3"), "{err}");
    }
}
