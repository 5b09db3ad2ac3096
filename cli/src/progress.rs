//! Progress bars for long transfers in the interactive clients: drawn on a terminal, absent when
//! the client is driven by a script (stdin piped or stdout redirected), so output stays
//! parseable.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// How a transfer bar looks: what moves, how much of how much, how fast, how long still.
const TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";

/// The bar of one transfer, drawn (on stderr) from its first update, once the size is known;
/// cleared when dropped.
pub struct TransferBar {
    label: String,
    drawn: bool,
    bar: Option<ProgressBar>,
}

impl TransferBar {
    /// A bar labelled `label` (`uploading notes.pdf`), drawn only when a person is watching.
    pub fn new(label: &str) -> TransferBar {
        TransferBar {
            label: label.to_owned(),
            drawn: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
            bar: None,
        }
    }

    /// Records that `done` of `total` bytes have moved.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.drawn {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let style = ProgressStyle::with_template(TEMPLATE)
                .expect("the template is valid")
                .progress_chars("=> ");
            ProgressBar::new(total)
                .with_style(style)
                .with_message(self.label.clone())
        });
        bar.set_length(total);
        bar.set_position(done);
    }
}

impl Drop for TransferBar {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
