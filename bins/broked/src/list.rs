//! `broked connections list`: pages read from the database one after another and printed as
//! they come (issue 19), so that a list of 100,000 connections starts at once and never holds
//! them all in memory.

use std::io::Write;

use broked_connections::{ConnType, ConnectionInfo, Connections, ListQuery, StatusFilter};

use crate::output::{Output, connection_json};

/// Connections read per page.
const PAGE: usize = 500;

/// The filters of `connections list`.
pub(crate) struct Filters {
    pub(crate) conn_type: Option<ConnType>,
    pub(crate) search: Option<String>,
    pub(crate) status: Option<StatusFilter>,
    /// Print at most this many.
    pub(crate) limit: Option<usize>,
}

/// `--status`: the last test result to list.
pub(crate) fn status(s: &str) -> Result<StatusFilter, String> {
    match s {
        "failing" => Ok(StatusFilter::Failing),
        "ok" => Ok(StatusFilter::Passing),
        "untested" => Ok(StatusFilter::Untested),
        _ => Err(format!("{s:?}: give failing, ok or untested")),
    }
}

pub(crate) fn run(out: Output, c: &Connections, f: Filters) -> anyhow::Result<()> {
    let mut query = ListQuery {
        conn_type: f.conn_type,
        search: f.search,
        status: f.status,
        ..ListQuery::default()
    };
    let mut printer = Printer::new(out);
    let mut left = f.limit;
    loop {
        query.limit = Some(left.map_or(PAGE, |n| n.min(PAGE)));
        if query.limit == Some(0) {
            break;
        }
        let page = c.list_page(&query)?;
        printer.page(&page.items)?;
        if let Some(n) = &mut left {
            *n -= page.items.len();
        }
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    printer.finish()
}

const HEADER: [&str; 8] = [
    "CONN_ID", "TYPE", "HOST", "PORT", "SCHEMA", "LOGIN", "UPDATED", "TEST",
];

fn cells(c: &ConnectionInfo) -> [String; 8] {
    [
        c.conn_id.to_string(),
        c.conn_type.to_string(),
        c.host.clone().unwrap_or_default(),
        c.port.map(|p| p.to_string()).unwrap_or_default(),
        c.schema.clone().unwrap_or_default(),
        c.login.clone().unwrap_or_default(),
        c.updated_at.clone(),
        match &c.last_test {
            Some(t) if t.ok => "ok".into(),
            Some(_) => "failed".into(),
            None => "-".into(),
        },
    ]
}

/// Prints pages as they come: a table whose column widths are those of the first page (a
/// longer value later pushes its line out of line, rather than the list waiting for the
/// last page), or the JSON array of every connection, written item by item.
struct Printer {
    out: Output,
    widths: Option<[usize; 8]>,
    printed: usize,
    stdout: std::io::StdoutLock<'static>,
}

impl Printer {
    fn new(out: Output) -> Printer {
        Printer {
            out,
            widths: None,
            printed: 0,
            stdout: std::io::stdout().lock(),
        }
    }

    fn page(&mut self, items: &[ConnectionInfo]) -> anyhow::Result<()> {
        match self.out {
            Output::Json => {
                for c in items {
                    let text = serde_json::to_string_pretty(&connection_json(c))?;
                    let sep = if self.printed == 0 { "[\n" } else { ",\n" };
                    write!(self.stdout, "{sep}")?;
                    let indented: Vec<String> = text.lines().map(|l| format!("  {l}")).collect();
                    write!(self.stdout, "{}", indented.join("\n"))?;
                    self.printed += 1;
                }
            }
            Output::Text => {
                let rows: Vec<[String; 8]> = items.iter().map(cells).collect();
                let widths = *self.widths.get_or_insert_with(|| {
                    let mut w = HEADER.map(str::len);
                    for row in &rows {
                        for (w, cell) in w.iter_mut().zip(row) {
                            *w = (*w).max(cell.chars().count());
                        }
                    }
                    w
                });
                if self.printed == 0 {
                    line(&mut self.stdout, &HEADER.map(str::to_owned), &widths)?;
                }
                for row in &rows {
                    line(&mut self.stdout, row, &widths)?;
                }
                self.printed += rows.len();
            }
        }
        self.stdout.flush()?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        match self.out {
            Output::Json if self.printed == 0 => writeln!(self.stdout, "[]")?,
            Output::Json => writeln!(self.stdout, "\n]")?,
            Output::Text if self.printed == 0 => {
                if self.widths.is_none() {
                    line(
                        &mut self.stdout,
                        &HEADER.map(str::to_owned),
                        &HEADER.map(str::len),
                    )?;
                }
                writeln!(self.stdout, "(no connections)")?;
            }
            Output::Text => {}
        }
        self.stdout.flush()?;
        Ok(())
    }
}

fn line(out: &mut impl Write, cells: &[String; 8], widths: &[usize; 8]) -> std::io::Result<()> {
    let text: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    writeln!(out, "{}", text.join("  ").trim_end())
}
