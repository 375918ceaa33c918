//! A terminal progress bar on stderr, drawn only when stderr is a terminal
//! and at most ~10 times a second, so it costs nothing in pipelines and CI.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A progress bar over `total` units.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A bar; drawn only if `wanted` and stderr is a terminal.
    pub fn new(label: &str, total: u64, wanted: bool) -> Self {
        Self {
            label: label.to_string(),
            total,
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
        }
    }

    /// Reports `done` units.
    pub fn set(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        self.draw(done);
    }

    fn draw(&self, done: u64) {
        const WIDTH: usize = 30;
        let frac = if self.total == 0 {
            1.0
        } else {
            (done as f64 / self.total as f64).min(1.0)
        };
        let filled = (frac * WIDTH as f64) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {}/{} {:.1}s ",
            self.label,
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            done,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    /// Draws the final state and ends the line.
    pub fn finish(&mut self, done: u64) {
        if self.enabled {
            self.draw(done);
            let _ = writeln!(std::io::stderr());
        }
    }
}
