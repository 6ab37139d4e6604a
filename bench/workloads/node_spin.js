// Throughput workload for JIT profiling overhead: calls a few small JS
// functions in a loop for SECONDS and prints iterations per second.
// usage: node --perf-basic-prof node_spin.js SECONDS
let sink = 0;
function mix(i) { return (sink * 31 + i) | 0; }
function step(i) { sink = mix(i) ^ (i >>> 3); }
function round() { for (let i = 0; i < 10000; i++) step(i); }
const seconds = Number(process.argv[2] || 5);
const start = process.hrtime.bigint();
const end = start + BigInt(Math.round(seconds * 1e9));
let rounds = 0;
while (process.hrtime.bigint() < end) { round(); rounds++; }
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
console.log(`rounds per second ${(rounds / elapsed).toFixed(1)}`);
