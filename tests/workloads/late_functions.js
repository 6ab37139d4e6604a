// Compiles its hot functions only in its last second: V8 appends their
// perf-map lines then, and the process exits right after.
// usage: node --perf-basic-prof late_functions.js SECONDS
let sink = 0;
function early(units) { for (let i = 0; i < units * 20000; i++) sink = (sink + i) | 0; }
const seconds = Number(process.argv[2] || 3);
const lateFrom = Date.now() + (seconds - 1) * 1000;
while (Date.now() < lateFrom) early(4);
// Twenty functions made now, each with a name of its own, run in turn.
const late = [];
for (let n = 0; n < 20; n++) {
  late.push(eval(`(function lateFunction${n}(units) {
    for (let i = 0; i < units * 20000; i++) sink = (sink + i) | 0;
  })`));
}
const end = Date.now() + 1000;
for (let n = 0; Date.now() < end; n = (n + 1) % 20) late[n](4);
