//! `serve`'s live page in a real browser: headless Chromium (Debian's
//! `chromium`, installed by the test command) loads `/`, the flame graph in
//! it shows a ground-truth workload's function, and clicking that frame
//! zooms into it. Chromium is driven over the DevTools protocol with a
//! minimal WebSocket client; a screenshot of the zoomed page is kept in
//! target/test-artifacts/.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::*;
use serde_json::{json, Value};

const FIND_FRAME: &str = r#"(() => {
  const frame = document.getElementById("flamegraph");
  const doc = frame && frame.contentDocument;
  if (!doc) return null;
  const group = [...doc.querySelectorAll("g")].find(g => {
    const title = g.querySelector(":scope > title");
    return title && title.textContent.startsWith("burn_three ");
  });
  if (!group) return null;
  const rect = group.querySelector("rect");
  rect.scrollIntoView({block: "center"});
  const inner = rect.getBoundingClientRect();
  const outer = frame.getBoundingClientRect();
  return {
    x: outer.left + frame.clientLeft + inner.left + inner.width / 2,
    y: outer.top + frame.clientTop + inner.top + inner.height / 2,
    width: inner.width,
    unzoomHidden: doc.getElementById("unzoom").classList.contains("hide"),
  };
})()"#;

/// Where the flame graph's root frame ("all") is in its frame, and how tall
/// the graph is against the frame.
const ROOT_FRAME: &str = r#"(() => {
  const frame = document.getElementById("flamegraph");
  const doc = frame && frame.contentDocument;
  const root = doc && [...doc.querySelectorAll("g > title")].find(t => t.textContent.startsWith("all "));
  if (!root) return null;
  const rect = root.parentNode.querySelector("rect").getBoundingClientRect();
  return {top: rect.top, bottom: rect.bottom, view: frame.clientHeight,
          graph: doc.documentElement.getBoundingClientRect().height};
})()"#;

#[test]
fn live_page_shows_the_flame_graph_and_zooms_on_click() {
    let _serial = serial();
    let burner = Workload::start(&workload("cpu_split"), &["60"]);
    // A deep stack beside the wide one makes the graph taller than its frame.
    let deep = Workload::start(&workload("deep_stack"), &["400", "60"]);
    let (serve, port) = start_serve();

    let mut browser = Browser::open(&format!("http://127.0.0.1:{port}/"), &port.to_string());
    let devtools = &mut browser.devtools;

    // The page's first flame graph covers 5 s of sampling. It opens at its
    // base: the root frame is in view, though the graph is taller than the
    // frame.
    let mut root = Value::Null;
    let number = |root: &Value, key: &str| root[key].as_f64().unwrap_or(f64::NAN);
    let at_base = wait_for(Duration::from_secs(30), || {
        root = devtools.evaluate(ROOT_FRAME);
        number(&root, "top") >= 0.0 && number(&root, "bottom") <= number(&root, "view")
    });
    assert!(at_base, "the root frame is out of view: {root}");
    assert!(
        number(&root, "graph") > 1.5 * number(&root, "view"),
        "the deep stack did not make the graph tall: {root}"
    );
    let mut before = Value::Null;
    let shown = wait_for(Duration::from_secs(30), || {
        before = devtools.evaluate(FIND_FRAME);
        !before.is_null()
    });
    assert!(shown, "the live page never showed burn_three");
    let title = devtools.evaluate("document.title");
    assert!(
        title.as_str().unwrap().starts_with("bpfscope on "),
        "{title}"
    );
    let histograms = devtools.evaluate("document.getElementById('histograms').textContent");
    assert!(
        histograms.as_str().unwrap().contains("Run-queue latency"),
        "{histograms}"
    );
    assert_eq!(before["unzoomHidden"], json!(true), "{before}");

    for kind in ["mousePressed", "mouseReleased"] {
        devtools.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": before["x"], "y": before["y"], "button": "left", "clickCount": 1}),
        );
    }
    let mut after = Value::Null;
    let zoomed = wait_for(Duration::from_secs(5), || {
        after = devtools.evaluate(FIND_FRAME);
        after["unzoomHidden"] == json!(false)
    });
    assert!(
        zoomed,
        "clicking burn_three did not zoom: {before} then {after}"
    );
    let (width_before, width_after) = (
        before["width"].as_f64().unwrap(),
        after["width"].as_f64().unwrap(),
    );
    assert!(
        width_after > width_before * 1.05,
        "the zoomed frame did not widen: {width_before} -> {width_after}"
    );

    browser.screenshot("live-page-zoomed.png");

    drop(browser);
    drop(serve);
    drop((burner, deep));
}
