//! The one table the bench prints: a row per figure with its target beside it, in
//! sections that note the machine's load when they began (the figures are only as
//! quiet as the machine was).

use std::fmt::Write as _;

/// A goal for a figure. Goals, not assertions: a missed one is marked, not fatal.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The figure should be below this.
    Below(f64, &'static str),
    /// The figure should be at least this.
    AtLeast(f64, &'static str),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Target::Below(limit, _) => value < limit,
            Target::AtLeast(limit, _) => value >= limit,
        }
    }

    fn text(self) -> String {
        match self {
            Target::Below(limit, unit) => format!("< {limit} {unit}"),
            Target::AtLeast(limit, unit) => format!("≥ {limit} {unit}"),
        }
        .trim_end()
        .to_string()
    }
}

enum Row {
    Section(String),
    Figure {
        what: String,
        figure: String,
        target: String,
        met: Option<bool>,
    },
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
}

impl Table {
    /// Starts a section, noting the load average now.
    pub fn section(&mut self, title: &str) {
        self.rows.push(Row::Section(format!(
            "**{title}** (load {})",
            load_average()
        )));
    }

    /// A figure with no target of its own (context for the ones that have one).
    pub fn info(&mut self, what: impl Into<String>, figure: impl Into<String>) {
        self.rows.push(Row::Figure {
            what: what.into(),
            figure: figure.into(),
            target: String::new(),
            met: None,
        });
    }

    /// A figure whose `value` is held against `target`.
    pub fn check(
        &mut self,
        what: impl Into<String>,
        figure: impl Into<String>,
        value: f64,
        target: Target,
    ) {
        self.rows.push(Row::Figure {
            what: what.into(),
            figure: figure.into(),
            target: target.text(),
            met: Some(target.met(value)),
        });
    }

    /// The table as Markdown, padded so that it also reads as plain text.
    pub fn render(&self) -> String {
        let header = ["measurement", "figure", "target", "met"];
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|row| match row {
                Row::Section(title) => [title.clone(), String::new(), String::new(), String::new()],
                Row::Figure {
                    what,
                    figure,
                    target,
                    met,
                } => [
                    what.clone(),
                    figure.clone(),
                    target.clone(),
                    match met {
                        Some(true) => "yes".into(),
                        Some(false) => "**no**".into(),
                        None => String::new(),
                    },
                ],
            })
            .collect();
        let mut width = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (cell, w) in cells.iter().zip(width) {
                let pad = w - cell.chars().count();
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            }
            s
        };
        let mut out = line(&header.map(String::from));
        out.push('\n');
        out.push_str(&line(&width.map(|w| "-".repeat(w))));
        for row in &cells {
            out.push('\n');
            out.push_str(&line(row));
        }
        out.push('\n');
        out
    }

    pub fn missed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Row::Figure {
                        met: Some(false),
                        ..
                    }
                )
            })
            .count()
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Milliseconds with as many decimals as they deserve.
pub fn ms(value: f64) -> String {
    let decimals = if value.abs() < 10.0 {
        2
    } else if value.abs() < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} ms")
}

/// Milliseconds with a sign, for differences.
pub fn ms_diff(value: f64) -> String {
    let sign = if value >= 0.0 { "+" } else { "" };
    format!("{sign}{}", ms(value))
}

/// MiB from KiB.
pub fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}
