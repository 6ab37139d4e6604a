//! The live page at `/`: the current CPU flame graph (the interactive SVG of
//! `/flamegraph.svg`, click to zoom), the subsecond heatmap of the last
//! minutes (`/heatmap.html`: click two cells for the flame graph of that
//! range) and the main latency histograms. A few lines of inline script
//! refresh the histograms every 5 s and the flame graph every 30 s unless the
//! reader has zoomed into it, and open each flame graph scrolled to its base
//! (one deep stack anywhere on the host makes the graph taller than its
//! frame, and the widest frames are at the bottom); nothing is downloaded
//! from anywhere else.

/// Seconds each flame graph on the page covers.
pub const FLAME_GRAPH_SECONDS: u64 = 5;
/// Seconds the page's heatmap covers.
pub const HEATMAP_SECONDS: u64 = 180;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page, with the histograms as they are now (`histograms`, BCC text).
pub fn render(host: &str, histograms: &str, offcpu: bool) -> String {
    let offcpu_link = if offcpu {
        " · <a href=\"/offcpu.svg\">off-CPU flame graph (10 s)</a>"
    } else {
        ""
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>bpfscope on {host}</title>
<style>
body {{ font-family: sans-serif; margin: 1em 2em; color: #222; }}
iframe {{ width: 100%; height: 60vh; border: 1px solid #bbb; }}
pre {{ font-size: 12px; background: #f6f6f6; padding: 0.5em; }}
.note {{ color: #666; font-size: 13px; }}
</style></head>
<body>
<h1>bpfscope on {host}</h1>
<p class="note">CPU flame graph of the last {seconds} s of sampling: click a frame to zoom, "Reset Zoom" to go back.
It refreshes every 30 s unless zoomed. <span id="status"></span>
· <a href="/metrics">metrics</a> · <a href="/debug/pprof/profile?seconds=30">pprof (30 s)</a>{offcpu_link}
· <a href="/flamegraph.svg?seconds=10&amp;diff_base=60">what changed: the last 10 s against a minute earlier</a></p>
<iframe id="flamegraph" title="CPU flame graph" src="/flamegraph.svg?seconds={seconds}" onload="toBase(this)"></iframe>
<h2>Subsecond heatmap of the last {heatmap_seconds} s</h2>
<p class="note">As it was when the page loaded (<a href="/heatmap.html?seconds={heatmap_seconds}">open it alone</a>, or reload for the latest).</p>
<iframe id="heatmap" title="CPU subsecond heatmap" style="height: 90vh" src="/heatmap.html?seconds={heatmap_seconds}"></iframe>
<h2>Latency histograms</h2>
<pre id="histograms">{histograms}</pre>
<script>
"use strict";
const seconds = {seconds};
// The graph's base (its widest frames) is at the bottom of a tall graph.
function toBase(frame) {{
  const view = frame.contentWindow;
  if (view) view.scrollTo(0, view.document.documentElement.scrollHeight || 1e7);
}}
function zoomed() {{
  const doc = document.getElementById("flamegraph").contentDocument;
  const unzoom = doc && doc.getElementById("unzoom");
  return Boolean(unzoom && !unzoom.classList.contains("hide"));
}}
setInterval(() => {{
  fetch("/histograms").then(r => r.text()).then(text => {{
    document.getElementById("histograms").textContent = text;
  }}).catch(() => {{}});
}}, 5000);
setInterval(() => {{
  if (zoomed()) {{
    document.getElementById("status").textContent = "(zoomed: not refreshing)";
    return;
  }}
  document.getElementById("status").textContent = "";
  document.getElementById("flamegraph").src = "/flamegraph.svg?seconds=" + seconds + "&t=" + Date.now();
}}, 30000);
</script>
</body></html>
"#,
        host = escape(host),
        seconds = FLAME_GRAPH_SECONDS,
        heatmap_seconds = HEATMAP_SECONDS,
        histograms = escape(histograms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_embeds_escaped_histograms_and_the_flame_graph() {
        let page = render("h<1>", "a < b", false);
        assert!(page.contains("bpfscope on h&lt;1&gt;"));
        assert!(page.contains("<pre id=\"histograms\">a &lt; b</pre>"));
        assert!(page.contains("src=\"/flamegraph.svg?seconds=5\""));
        assert!(page.contains("src=\"/heatmap.html?seconds=180\""));
        assert!(!page.contains("offcpu.svg"));
        assert!(!page.contains("<script src"));
    }
}
