//! Pull progress on the terminal: one indicatif bar per layer on stderr, nothing when stderr
//! is not a terminal.

use std::io::IsTerminal;

use image::pull::{BlobProgress, NoProgress, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Bars for the blobs of one pull.
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
}

/// Progress bars when stderr is a terminal, else silence.
pub fn for_stderr() -> Box<dyn Progress> {
    if !std::io::stderr().is_terminal() {
        return Box::new(NoProgress);
    }
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    Box::new(Bars {
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        style,
    })
}

impl Progress for Bars {
    fn blob(&self, digest: &str, size: u64) -> Box<dyn BlobProgress> {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(self.style.clone());
        let short = digest.strip_prefix("sha256:").unwrap_or(digest);
        bar.set_prefix(short.chars().take(12).collect::<String>());
        Box::new(Bar(bar))
    }
}

struct Bar(ProgressBar);

impl BlobProgress for Bar {
    fn position(&self, n: u64) {
        self.0.set_position(n);
    }

    fn finish(&self, how: &str) {
        self.0.finish_with_message(how.to_owned());
    }
}
