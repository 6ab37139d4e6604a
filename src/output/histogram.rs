//! Histogram renderers: BCC's text layout (`usecs : count distribution` with
//! a bar of stars) and JSON with the same data.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use crate::model::histogram::{Histogram, HistogramKey, HistogramReport, Scale};

const BAR_WIDTH: u64 = 40;

fn stars(count: u64, max: u64) -> String {
    let width = (count * BAR_WIDTH).checked_div(max).unwrap_or(0) as usize;
    format!("{:<width$}", "*".repeat(width), width = BAR_WIDTH as usize)
}

/// One histogram in BCC's layout, from slot 0 to the highest non-empty slot.
pub fn render_one(hist: &Histogram, unit: &str, scale: Scale, out: &mut String) {
    let Some(last) = hist.slots.iter().rposition(|&count| count > 0) else {
        let _ = writeln!(out, "     (no events)");
        return;
    };
    let max = hist.slots.iter().copied().max().unwrap_or(0);
    match scale {
        Scale::Log2 => {
            let _ = writeln!(out, "     {unit:<19} : count    distribution");
        }
        Scale::Linear => {
            let _ = writeln!(out, "     {unit:<13} : count     distribution");
        }
    }
    for (index, &count) in hist.slots.iter().enumerate().take(last + 1) {
        let (low, high) = scale.slot_range(index);
        let bar = stars(count, max);
        let _ = match scale {
            Scale::Log2 => writeln!(out, "{low:>10} -> {high:<10} : {count:<8} |{bar}|"),
            Scale::Linear => writeln!(out, "        {low:<10} : {count:<8} |{bar}|"),
        };
    }
    let _ = match scale {
        Scale::Log2 => writeln!(
            out,
            "avg = {:.0} {unit}, total: {} {unit}, count: {}",
            hist.average(),
            hist.sum,
            hist.count
        ),
        Scale::Linear => writeln!(out, "avg = {:.2}, count: {}", hist.average(), hist.count),
    };
}

/// All histograms of a report, one block per key, sorted by key.
pub fn render_text(report: &HistogramReport) -> String {
    let mut out = String::new();
    let mut histograms: Vec<&(HistogramKey, Histogram)> = report.histograms.iter().collect();
    histograms.sort_by(|a, b| a.0.cmp(&b.0));
    if histograms.is_empty() {
        out.push_str("     (no events)\n");
    }
    for (key, hist) in histograms {
        match key {
            HistogramKey::Keyed { id, name } if name.is_empty() => {
                let _ = writeln!(out, "\n{} = {id}", report.key_name);
            }
            HistogramKey::Keyed { id, name } => {
                let _ = writeln!(out, "\n{} = {id} {name}", report.key_name);
            }
            HistogramKey::Named(name) => {
                let _ = writeln!(out, "\n{} = {name}", report.key_name);
            }
            HistogramKey::Total => {}
        }
        render_one(hist, report.unit, report.scale, &mut out);
    }
    out
}

/// The same data as JSON: one object per line (one per interval).
pub fn render_json(tool: &str, report: &HistogramReport, timestamp: Option<&str>) -> String {
    let histograms: Vec<Value> = report
        .histograms
        .iter()
        .map(|(key, hist)| {
            let mut object = Map::new();
            match key {
                HistogramKey::Keyed { id, name } => {
                    object.insert(report.key_name.into(), json!(id));
                    object.insert("name".into(), json!(name));
                }
                HistogramKey::Named(name) => {
                    object.insert(report.key_name.into(), json!(name));
                }
                HistogramKey::Total => {}
            }
            object.insert("count".into(), json!(hist.count));
            object.insert("sum".into(), json!(hist.sum));
            let last = hist
                .slots
                .iter()
                .rposition(|&count| count > 0)
                .map_or(0, |last| last + 1);
            let buckets: Vec<Value> = hist
                .slots
                .iter()
                .enumerate()
                .take(last)
                .map(|(slot, count)| {
                    let (low, high) = report.scale.slot_range(slot);
                    json!({"low": low, "high": high, "count": count})
                })
                .collect();
            object.insert("buckets".into(), Value::Array(buckets));
            Value::Object(object)
        })
        .collect();
    let mut line = Map::new();
    line.insert("tool".into(), json!(tool));
    line.insert("unit".into(), json!(report.unit));
    if let Some(time) = timestamp {
        line.insert("time".into(), json!(time));
    }
    line.insert("histograms".into(), Value::Array(histograms));
    format!("{}\n", Value::Object(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HistogramReport {
        HistogramReport {
            unit: "usecs",
            scale: Scale::Log2,
            key_name: "pid",
            histograms: vec![(
                HistogramKey::Keyed {
                    id: 42,
                    name: "a\"b".into(),
                },
                Histogram {
                    slots: vec![0, 5, 10, 0],
                    count: 15,
                    sum: 70,
                },
            )],
        }
    }

    #[test]
    fn text_follows_bcc_layout() {
        let text = render_text(&report());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "pid = 42 a\"b");
        assert_eq!(lines[2], "     usecs               : count    distribution");
        assert_eq!(
            lines[3],
            format!("         0 -> 1          : 0        |{}|", " ".repeat(40))
        );
        assert_eq!(
            lines[4],
            format!(
                "         2 -> 3          : 5        |{:<40}|",
                "*".repeat(20)
            )
        );
        assert_eq!(
            lines[5],
            format!("         4 -> 7          : 10       |{}|", "*".repeat(40))
        );
        assert_eq!(lines[6], "avg = 5 usecs, total: 70 usecs, count: 15");
        assert_eq!(lines.len(), 7, "trailing empty slots are not printed");
    }

    #[test]
    fn json_has_the_same_data() {
        let json = render_json("runqlat", &report(), Some("12:00:00"));
        assert_eq!(
            json,
            "{\"tool\":\"runqlat\",\"unit\":\"usecs\",\"time\":\"12:00:00\",\"histograms\":[{\"pid\":42,\"name\":\"a\\\"b\",\
             \"count\":15,\"sum\":70,\"buckets\":[{\"low\":0,\"high\":1,\"count\":0},{\"low\":2,\"high\":3,\"count\":5},\
             {\"low\":4,\"high\":7,\"count\":10}]}]}\n"
        );
    }
}
