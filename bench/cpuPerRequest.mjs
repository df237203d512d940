// Preload for the API process (BENCH_NODE_ARGS="--import <this file>"): the process CPU time (user +
// system) between the first and the last POST /v1/jobs, per request, written as JSON every 0.5 s to
// CPU_PER_REQUEST_OUT (default var/tmp/cpu-per-request.json under the API's working directory).
// Process CPU per submission is what a loaded machine distorts least (req/s moves with the load).
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import process from 'node:process';
import { performance } from 'node:perf_hooks';
import { setInterval } from 'node:timers';
const f = process.env.CPU_PER_REQUEST_OUT ?? 'var/tmp/cpu-per-request.json';
let n = 0, first, lastCpu, firstT, lastT;
const cpu = () => { const u = process.cpuUsage(); return u.user + u.system; };
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (ev, req, ...rest) {
  if (ev === 'request' && req.method === 'POST' && req.url === '/v1/jobs') {
    const c = cpu(), t = performance.now();
    if (n === 0) { first = c; firstT = t; }
    n++; lastCpu = c; lastT = t;
  }
  return emit.call(this, ev, req, ...rest);
};
const dump = () => {
  if (n < 2) return;
  // Never let the measurement take the API down (a missing directory, say).
  try {
    writeFileSync(f, JSON.stringify({ requests: n - 1, cpuUs: lastCpu - first, wallMs: lastT - firstT, usPerRequest: (lastCpu - first) / (n - 1), cpuShare: (lastCpu - first) / 1000 / (lastT - firstT) }));
  } catch { /* measurement only */ }
};
setInterval(dump, 500).unref();
process.on('exit', dump);
