// Ground truth for off-CPU profiles of JIT code: driver() alternates
// waitThree (blocks 30 ms) and waitOne (blocks 10 ms) in Atomics.wait, so
// blocked time splits 3:1 between them.
// usage: node --perf-basic-prof blocking_split.js SECONDS
const cell = new Int32Array(new SharedArrayBuffer(4));
function waitThree() { Atomics.wait(cell, 0, 0, 30); }
function waitOne() { Atomics.wait(cell, 0, 0, 10); }
function driver(seconds) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    waitThree();
    waitOne();
  }
}
driver(Number(process.argv[2] || 5));
