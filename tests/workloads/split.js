// Ground truth for JIT profiles: driver() alternates burnThree (3 units of
// work per round) and burnOne (1 unit), both through spin(), in rounds of
// varying length, so on-CPU time splits 3:1 between them.
// usage: node --perf-basic-prof split.js SECONDS
let sink = 0;
function spin(units) { for (let i = 0; i < units * 20000; i++) sink = (sink + i) | 0; }
function burnThree(units) { spin(3 * units); }
function burnOne(units) { spin(units); }
function driver(seconds) {
  const end = Date.now() + seconds * 1000;
  let seed = 1;
  while (Date.now() < end) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const units = 1 + (seed % 8);
    burnThree(units);
    burnOne(units);
  }
}
driver(Number(process.argv[2] || 5));
