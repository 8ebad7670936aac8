//! The reproduction report: sections with figures and a claims table, written as `report.html` (figures inline),
//! `REPORT.md` and `claims.json`.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use samlab_core::run_dir::write_atomic;
use serde::{Deserialize, Serialize};

/// Whether a claim of the paper held in our run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Our measurement agrees with the claim.
    Pass,
    /// Our measurement contradicts the claim.
    Fail,
    /// The experiment behind it did not run (skipped or failed).
    NotRun,
}

impl Verdict {
    /// `Pass` when `ok`, else `Fail`.
    pub fn from_bool(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NotRun => "not-run",
        }
    }
}

/// One checked claim: `claims.json` holds a list of these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// Stable id, prefixed by area: `diag.`, `theory.`, `relu.`, `deep.`.
    pub id: String,
    /// The claim in words.
    pub claim: String,
    /// What the paper (or the authors' code) reports.
    pub paper: String,
    /// What we measured.
    pub measured: String,
    /// Pass, fail or not-run.
    pub verdict: Verdict,
}

/// A part of the report: one experiment with its text, figures and claims.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Paragraphs of explanation (plain text; blank lines separate paragraphs).
    pub text: String,
    /// Figures as paths to SVG files written beside the report (a PNG twin is linked from the Markdown).
    pub figures: Vec<PathBuf>,
    /// Rows of a results table: the header first.
    pub table: Vec<Vec<String>>,
    /// The claims this experiment checks.
    pub claims: Vec<Claim>,
}

/// The whole report.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Title.
    pub title: String,
    /// Opening paragraph (how it was produced, how long it took).
    pub intro: String,
    /// Sections in order.
    pub sections: Vec<Section>,
}

impl Report {
    /// Every claim of every section, in order.
    pub fn claims(&self) -> Vec<Claim> {
        self.sections
            .iter()
            .flat_map(|s| s.claims.iter().cloned())
            .collect()
    }

    /// Writes `report.html`, `REPORT.md` and `claims.json` into `dir` (each atomically) and returns their paths.
    pub fn write(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let json = serde_json::to_string_pretty(&self.claims()).map_err(io::Error::other)? + "\n";
        let files = [
            ("report.html", self.html(dir)?),
            ("REPORT.md", self.markdown(dir)),
            ("claims.json", json),
        ];
        files
            .into_iter()
            .map(|(name, text)| {
                let path = dir.join(name);
                write_atomic(&path, |p| fs::write(p, text))?;
                Ok(path)
            })
            .collect()
    }

    fn counts(&self) -> String {
        let claims = self.claims();
        let count = |v| claims.iter().filter(|c| c.verdict == v).count();
        format!(
            "{} claims: {} pass, {} fail, {} not run.",
            claims.len(),
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::NotRun)
        )
    }

    fn markdown(&self, dir: &Path) -> String {
        let mut md = format!(
            "# {}\n\n{}\n\n{}\n\n",
            self.title,
            self.intro,
            self.counts()
        );
        md += "## Claims\n\n| id | claim | paper | ours | verdict |\n|---|---|---|---|---|\n";
        for c in self.claims() {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | **{}** |",
                c.id,
                cell(&c.claim),
                cell(&c.paper),
                cell(&c.measured),
                c.verdict.label()
            );
        }
        for s in &self.sections {
            let _ = write!(md, "\n## {}\n\n{}\n\n", s.title, s.text.trim());
            if let Some((header, rows)) = s.table.split_first() {
                let _ = writeln!(md, "| {} |", header.join(" | "));
                let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
                for row in rows {
                    let _ = writeln!(md, "| {} |", row.join(" | "));
                }
                md.push('\n');
            }
            for fig in &s.figures {
                let png = relative(dir, &fig.with_extension("png"));
                let _ = writeln!(md, "![{}]({})\n", png, png);
            }
        }
        md
    }

    fn html(&self, dir: &Path) -> io::Result<String> {
        let mut h = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>{STYLE}</style></head>\n<body>\n<h1>{t}</h1>\n<p>{}</p>\n<p><b>{}</b></p>\n",
            escape(&self.intro),
            self.counts(),
            t = escape(&self.title)
        );
        h += "<h2>Claims</h2>\n<table><tr><th>id</th><th>claim</th><th>paper</th><th>ours</th><th>verdict</th></tr>\n";
        for c in self.claims() {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{v}\">{v}</td></tr>",
                escape(&c.id),
                escape(&c.claim),
                escape(&c.paper),
                escape(&c.measured),
                v = c.verdict.label()
            );
        }
        h += "</table>\n";
        for s in &self.sections {
            let _ = writeln!(h, "<h2>{}</h2>", escape(&s.title));
            for para in s.text.split("\n\n").filter(|p| !p.trim().is_empty()) {
                let _ = writeln!(h, "<p>{}</p>", escape(para.trim()));
            }
            if let Some((header, rows)) = s.table.split_first() {
                h += "<table>\n<tr>";
                for c in header {
                    let _ = write!(h, "<th>{}</th>", escape(c));
                }
                h += "</tr>\n";
                for row in rows {
                    h += "<tr>";
                    for c in row {
                        let _ = write!(h, "<td>{}</td>", escape(c));
                    }
                    h += "</tr>\n";
                }
                h += "</table>\n";
            }
            for fig in &s.figures {
                let svg = fs::read_to_string(fig)?;
                let start = svg.find("<svg").unwrap_or(0);
                let _ = writeln!(
                    h,
                    "<figure>{}<figcaption><a href=\"{p}\">{p}</a></figcaption></figure>",
                    &svg[start..],
                    p = escape(&relative(dir, &fig.with_extension("png")))
                );
            }
        }
        h += "</body></html>\n";
        Ok(h)
    }
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}\
th{background:#f3f3f3}.pass{color:#0a7a2f;font-weight:bold}.fail{color:#b00020;font-weight:bold}\
.not-run{color:#777;font-weight:bold}figure{margin:1em 0}figure svg{max-width:100%;height:auto}";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, verdict: Verdict) -> Claim {
        Claim {
            id: id.into(),
            claim: "1-SAM < ERM".into(),
            paper: "8x lower".into(),
            measured: "a|b".into(),
            verdict,
        }
    }

    #[test]
    fn writes_all_three_files_with_every_claim() {
        let dir = tempfile::tempdir().unwrap();
        let fig = dir.path().join("exp").join("fig.svg");
        fs::create_dir_all(fig.parent().unwrap()).unwrap();
        fs::write(&fig, "<?xml version=\"1.0\"?><svg id=\"x\"></svg>").unwrap();
        let report = Report {
            title: "T <1>".into(),
            intro: "intro".into(),
            sections: vec![Section {
                title: "S".into(),
                text: "p1\n\np2".into(),
                figures: vec![fig],
                table: vec![vec!["a".into(), "b".into()], vec!["1".into(), "2".into()]],
                claims: vec![
                    claim("diag.a", Verdict::Pass),
                    claim("diag.b", Verdict::Fail),
                    claim("deep.c", Verdict::NotRun),
                ],
            }],
        };
        report.write(dir.path()).unwrap();
        let json: Vec<Claim> =
            serde_json::from_str(&fs::read_to_string(dir.path().join("claims.json")).unwrap())
                .unwrap();
        assert_eq!(json, report.claims());
        let raw = fs::read_to_string(dir.path().join("claims.json")).unwrap();
        assert!(raw.contains("\"not-run\"") && raw.contains("\"pass\""));
        let html = fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<svg id=\"x\">") && !html.contains("<?xml"));
        assert!(html.contains("T &lt;1&gt;") && html.contains("exp/fig.png"));
        assert!(html.contains("3 claims: 1 pass, 1 fail, 1 not run."));
        let md = fs::read_to_string(dir.path().join("REPORT.md")).unwrap();
        assert!(md.contains("| `diag.b` | 1-SAM < ERM | 8x lower | a\\|b | **fail** |"));
        assert!(md.contains("![exp/fig.png](exp/fig.png)"));
    }
}
