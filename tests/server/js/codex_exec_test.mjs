// Codex CLI (`codex exec`, npm @openai/codex) against ds4-server on the demo model.
//   node codex_exec_test.mjs <ds4-server> <model.gguf> <codex>
// Codex's first request carries a ~6k-token prompt (instructions, tools, environment), so
// the run is slow on a small CPU. The demo model's words are random: the check is that
// every request Codex sends is accepted (HTTP 200 on /v1/responses, no 4xx/5xx) and that
// Codex reads the streams to the end and exits 0. stream_idle_timeout_ms is raised because
// Codex does not count SSE comments (our keep-alive) as activity during a long prefill.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [bin, model, codex] = process.argv.slice(2);
if (!bin || !model || !codex) {
  console.error('usage: node codex_exec_test.mjs <ds4-server> <model.gguf> <codex>');
  process.exit(2);
}

const freePort = () =>
  new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

const port = await freePort();
const server = spawn(bin, ['-m', model, '--ctx', '16384', '--threads', '2', '--parallel', '1', '-n', '4',
                           '--port', String(port)], { stdio: ['ignore', 'inherit', 'inherit'] });
const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; ++i) {
  try {
    if ((await fetch(`${base}/health`)).ok) break;
  } catch {}
  if (i > 1200) throw new Error('ds4-server did not start');
  await new Promise((r) => setTimeout(r, 100));
}

const home = mkdtempSync(join(tmpdir(), 'ds4-codex-'));
const work = mkdtempSync(join(tmpdir(), 'ds4-codex-work-'));
writeFileSync(join(home, 'config.toml'), `model = "deepseek-v4-flash"
model_provider = "ds4"
[model_providers.ds4]
name = "ds4"
base_url = "${base}/v1"
wire_api = "responses"
request_max_retries = 0
stream_idle_timeout_ms = 3600000
stream_max_retries = 0
`);
let status;
try {
  // stdin closed: codex exec otherwise waits for more input.
  const run = spawn(codex, ['exec', '--skip-git-repo-check', 'say hi'], {
    cwd: work, env: { ...process.env, CODEX_HOME: home }, stdio: ['ignore', 'inherit', 'inherit'],
  });
  status = await new Promise((resolve) => run.on('exit', (code) => resolve(code)));
  console.log(`codex exec exited with ${status}`);
  assert.equal(status, 0, 'codex exec failed');
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const lines = metrics.split('\n').filter((l) => l.startsWith('ds4_requests_total{endpoint="/v1/responses"'));
  console.log(lines.join('\n'));
  assert.ok(lines.some((l) => l.includes('status="200"') && !l.endsWith(' 0')), 'no answered /v1/responses request');
  assert.ok(!lines.some((l) => /status="[45]\d\d"/.test(l)), 'a /v1/responses request was refused');
} finally {
  server.kill('SIGTERM');
  rmSync(home, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
}
const code = await new Promise((resolve) => server.on('exit', (c) => resolve(c)));
assert.equal(code, 0, 'ds4-server did not shut down cleanly');
console.log('codex exec test passed');
