// What the JS tests that drive a real ds4-server share (js/sdk_test.mjs,
// clients/agent_client_test.mjs): a free loopback port, the server process with its exit
// status, and the wait until it answers /health. Node built-ins only, so each test's own
// node_modules stays the only place its npm packages come from.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';

// A port the kernel just handed out on 127.0.0.1 (closed again before it is returned).
export const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

// `bin args...` with the server's output on ours; `exit` resolves to its exit status.
// A test that dies early (an uncaught error) must not leave the server running: it would
// keep its port and, through the inherited output, hold the caller's pipe open.
export function spawnServer(bin, args) {
  const proc = spawn(bin, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  let running = true;
  const exit = new Promise((resolve) => proc.on('exit', (code) => { running = false; resolve(code); }));
  process.on('exit', () => { if (running) proc.kill('SIGKILL'); });
  return { proc, exit };
}

// Polls `${base}/health` every 100 ms; the model load of a sanitizer build can take a
// while, so it gives up only after two minutes.
export async function waitHealthy(base) {
  for (let i = 0; ; ++i) {
    try {
      if ((await fetch(`${base}/health`)).ok) return;
    } catch {}
    if (i > 1200) throw new Error('ds4-server did not start');
    await new Promise((r) => setTimeout(r, 100));
  }
}
