// Compiles new hot functions all the time, one every 50 ms, each run until
// the next: V8 appends their perf-map lines as it goes, up to the moment
// the process exits, so whatever was appended after a profiler last read
// the map is named only if the map is read to its end after the exit.
// usage: node --perf-basic-prof late_functions.js SECONDS
let sink = 0;
const end = Date.now() + Number(process.argv[2] || 3) * 1000;
for (let n = 0; Date.now() < end; n++) {
  const lateFunction = eval(`(function lateFunction${n}(units) {
    for (let i = 0; i < units * 20000; i++) sink = (sink + i) | 0;
  })`);
  const until = Math.min(end, Date.now() + 50);
  while (Date.now() < until) lateFunction(4);
}
