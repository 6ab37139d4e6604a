//! Prometheus text exposition (format 0.0.4, what `promtool check metrics`
//! validates): log2 microsecond histograms from the kernel become cumulative
//! `_bucket{le=…}` series in seconds with `_sum` and `_count`; counters and
//! gauges for the agent's own health.
//!
//! Written here rather than with prometheus-client, which emits only
//! OpenMetrics, whose counter families (`# HELP x` with samples `x_total`)
//! promtool's classic checker rejects.

use std::fmt::Write;

use crate::model::histogram::{Histogram, Scale};

/// One labelled histogram of a family.
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub histogram: Histogram,
}

/// A labelled counter or gauge value.
pub type Sample = (Vec<(String, String)>, f64);

/// Builds an exposition, one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_list(labels: &[(String, String)], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A float as Prometheus prints it.
fn number(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_string()
    } else {
        format!("{value}")
    }
}

impl Exposition {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(
            self.text,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A histogram family `name` (which should end in `_seconds`) of
    /// microsecond log2 histograms: slot i holds values below 2^(i+1) us.
    pub fn microsecond_histograms(&mut self, name: &str, help: &str, series: &[Series]) {
        self.header(name, help, "histogram");
        for one in series {
            let last = one
                .histogram
                .slots
                .iter()
                .rposition(|&count| count > 0)
                .map_or(0, |last| last + 1);
            let mut cumulative = 0;
            for (slot, count) in one.histogram.slots[..last].iter().enumerate() {
                cumulative += count;
                let le = number((Scale::Log2.slot_range(slot).1 + 1) as f64 / 1e6);
                let _ = writeln!(
                    self.text,
                    "{name}_bucket{} {cumulative}",
                    label_list(&one.labels, Some(("le", &le)))
                );
            }
            let labels = label_list(&one.labels, None);
            let _ = writeln!(
                self.text,
                "{name}_bucket{} {}",
                label_list(&one.labels, Some(("le", "+Inf"))),
                one.histogram.count
            );
            let _ = writeln!(
                self.text,
                "{name}_sum{labels} {}",
                number(one.histogram.sum as f64 / 1e6)
            );
            let _ = writeln!(self.text, "{name}_count{labels} {}", one.histogram.count);
        }
    }

    /// A counter; `name` ends in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.samples(name, help, "counter", &[(Vec::new(), value)]);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.samples(name, help, "gauge", &[(Vec::new(), value)]);
    }

    /// A family of labelled counters or gauges (`kind`).
    pub fn samples(&mut self, name: &str, help: &str, kind: &str, values: &[Sample]) {
        self.header(name, help, kind);
        for (labels, value) in values {
            let _ = writeln!(
                self.text,
                "{name}{} {}",
                label_list(labels, None),
                number(*value)
            );
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let mut exposition = Exposition::default();
        let histogram = Histogram {
            slots: vec![1, 0, 3, 0],
            count: 4,
            sum: 10,
        };
        let labels = vec![("disk".to_string(), "v\"da".to_string())];
        exposition.microsecond_histograms("x_seconds", "Help.", &[Series { labels, histogram }]);
        exposition.counter("lost_total", "Lost.", 2.0);
        assert_eq!(
            exposition.finish(),
            "# HELP x_seconds Help.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{disk=\"v\\\"da\",le=\"0.000002\"} 1\n\
             x_seconds_bucket{disk=\"v\\\"da\",le=\"0.000004\"} 1\n\
             x_seconds_bucket{disk=\"v\\\"da\",le=\"0.000008\"} 4\n\
             x_seconds_bucket{disk=\"v\\\"da\",le=\"+Inf\"} 4\n\
             x_seconds_sum{disk=\"v\\\"da\"} 0.00001\n\
             x_seconds_count{disk=\"v\\\"da\"} 4\n\
             # HELP lost_total Lost.\n# TYPE lost_total counter\nlost_total 2\n"
        );
    }
}
