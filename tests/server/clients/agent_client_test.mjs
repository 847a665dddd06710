// A coding-agent CLI (Codex, Claude Code, opencode, Pi; npm packages pinned in
// package.json) runs one tool-using turn against ds4-server on the demo model.
//   node agent_client_test.mjs <codex|claude|opencode|pi> <ds4-server> <model.gguf> <client binary>
//
// The demo model's weights are random, so the server runs with --test-script: a prompt
// holding the probe word gets a reply that calls the client's shell tool with
// `echo ds4-tool-out-$((6*7))`; a prompt holding `ds4-tool-out-42` (which only the
// command's output contains) gets the final answer. The model still runs every token.
// Passing means the client configured as the README says accepted every response,
// parsed the streamed tool call, ran the command, sent its output back in a follow-up
// request that reused the live KV session, and printed the final answer.
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { freePort, spawnServer, waitHealthy } from '../server_process.mjs';

const [client, bin, model, exe] = process.argv.slice(2);
if (!client || !bin || !model || !exe) {
  console.error('usage: node agent_client_test.mjs <codex|claude|opencode|pi> <ds4-server> <model.gguf> <client>');
  process.exit(2);
}

const PROBE = 'ds4-probe-7';
const PROMPT = `Run the ${PROBE} command`;
const FINAL = 'The command printed ds4-tool-out-42. ds4-final-answer';
const COMMAND = 'echo ds4-tool-out-$((6*7))';

const dsmlParam = (name, value) => `<｜DSML｜parameter name="${name}" string="true">${value}</｜DSML｜parameter>`;
const dsmlCall = (tool, params) =>
  '\n\n<｜DSML｜tool_calls>\n' +
  `<｜DSML｜invoke name="${tool}">\n` +
  Object.entries(params).map(([k, v]) => dsmlParam(k, v)).join('\n') +
  '\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

const home = mkdtempSync(join(tmpdir(), `ds4-${client}-home-`));
const work = mkdtempSync(join(tmpdir(), `ds4-${client}-work-`));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;

// Each client: its shell tool, its configuration (README "Using ds4-server with agents"),
// and the command line of one non-interactive turn.
const env = {
  ...process.env, HOME: home, NO_COLOR: '1', PWD: work,  // opencode takes its project from PWD
  XDG_CONFIG_HOME: join(home, '.config'), XDG_CACHE_HOME: join(home, '.cache'),
  XDG_DATA_HOME: join(home, '.local/share'), XDG_STATE_HOME: join(home, '.local/state'),
};
const clients = {
  codex: () => {
    writeFileSync(join(home, 'config.toml'), `model = "deepseek-v4-flash"
model_provider = "ds4"
model_context_window = 65536
[model_providers.ds4]
name = "ds4"
base_url = "${base}/v1"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
`);
    env.CODEX_HOME = home;
    return { tool: 'exec_command', params: { cmd: COMMAND }, args: ['exec', '--skip-git-repo-check', PROMPT] };
  },
  claude: () => {
    Object.assign(env, {
      ANTHROPIC_BASE_URL: base, ANTHROPIC_AUTH_TOKEN: 'ds4', ANTHROPIC_MODEL: 'deepseek-v4-flash',
      ANTHROPIC_DEFAULT_OPUS_MODEL: 'deepseek-v4-flash', ANTHROPIC_DEFAULT_SONNET_MODEL: 'deepseek-v4-flash',
      ANTHROPIC_DEFAULT_HAIKU_MODEL: 'deepseek-chat', ANTHROPIC_SMALL_FAST_MODEL: 'deepseek-chat',
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1', DISABLE_AUTOUPDATER: '1',
    });
    return {
      tool: 'Bash', params: { command: COMMAND, description: 'Print the probe value' },
      args: ['-p', PROMPT, '--allowedTools', 'Bash', '--output-format', 'text'],
    };
  },
  opencode: () => {
    writeFileSync(join(work, 'opencode.json'), JSON.stringify({
      $schema: 'https://opencode.ai/config.json',
      model: 'ds4/deepseek-v4-flash',
      provider: {
        ds4: {
          npm: '@ai-sdk/openai-compatible', name: 'ds4 (local)', options: { baseURL: `${base}/v1` },
          models: { 'deepseek-v4-flash': { name: 'DeepSeek V4 Flash (ds4)', limit: { context: 65536, output: 32768 } } },
        },
      },
    }, null, 2));
    return { tool: 'bash', params: { command: COMMAND, description: 'Print the probe value' }, args: ['run', PROMPT] };
  },
  pi: () => {
    mkdirSync(join(home, '.pi/agent'), { recursive: true });
    writeFileSync(join(home, '.pi/agent/models.json'), JSON.stringify({
      providers: {
        ds4: {
          baseUrl: `${base}/v1`, api: 'openai-completions', apiKey: 'ds4',
          models: [{
            id: 'deepseek-v4-flash', name: 'DeepSeek V4 Flash (ds4)', reasoning: true, input: ['text'],
            contextWindow: 65536, maxTokens: 32768, cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
          }],
        },
      },
    }, null, 2));
    env.PI_OFFLINE = '1';
    return {
      tool: 'bash', params: { command: COMMAND },
      args: ['-p', '--provider', 'ds4', '--model', 'deepseek-v4-flash', '--no-session', PROMPT],
    };
  },
};
if (!clients[client]) {
  console.error(`unknown client ${client}`);
  process.exit(2);
}
const spec = clients[client]();

// Reasoning first (thinking requests carry it back in their history), then the call.
const script = [
  { match: PROBE, reply: 'The user wants the probe value.</think>I will run it.' + dsmlCall(spec.tool, spec.params) },
  { match: 'ds4-tool-out-42', reply: FINAL },
];
const scriptPath = join(home, 'script.json');
const tracePath = join(home, 'trace.jsonl');
writeFileSync(scriptPath, JSON.stringify(script));

const { proc: server, exit: serverExit } = spawnServer(bin, [
  '-m', model, '--ctx', '65536', '--threads', '2', '--parallel', '2', '-n', '256', '--port', String(port),
  '--test-script', scriptPath, '--trace', tracePath]);
const run = (cmd, args, timeoutMs) =>
  new Promise((resolve) => {
    let out = '';
    const p = spawn(cmd, args, { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d) => { out += d; process.stdout.write(d); });
    p.stderr.on('data', (d) => process.stderr.write(d));
    const timer = setTimeout(() => { console.error(`${client}: no exit after ${timeoutMs} ms, killed`); p.kill('SIGKILL'); }, timeoutMs);
    p.on('exit', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });

let failure;
try {
  await waitHealthy(base);
  const { code, out } = await run(exe, spec.args, 600000);
  console.log(`${client} exited with ${code}`);
  assert.equal(code, 0, `${client} failed`);
  assert.ok(out.includes('ds4-final-answer'), `${client} did not print the final answer`);

  const events = readFileSync(tracePath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const of = (kind, request) => events.find((e) => e.event === kind && e.request === request);
  const scripted = events.filter((e) => e.event === 'script');
  // Side requests (titles, summaries) may quote the prompt too; they carry no tools, so
  // their scripted reply stays text. The agent turn is the one that made a call.
  const call = scripted.find((e) => e.entry === 0 && of('generated', e.request)?.finish === 'tool_calls');
  assert.ok(call, 'no request with the probe made a tool call');
  const answer = scripted.find((e) => e.entry === 1 && e.request > call.request);
  assert.ok(answer, 'the tool output never came back to the server');
  const made = of('generated', call.request);
  assert.equal(made.tool_calls.length, 1);
  assert.equal(made.tool_calls[0].name, spec.tool);
  assert.deepEqual(JSON.parse(made.tool_calls[0].arguments), spec.params);
  // The follow-up extends the first turn's prompt: its KV is reused, not re-evaluated.
  const reuse = of('cache', answer.request);
  console.log(`first prompt ${made.prompt_tokens} tokens; follow-up ${reuse.prompt_tokens}, reused ${reuse.common_prefix}`);
  assert.ok(reuse.common_prefix >= made.prompt_tokens, 'the follow-up did not reuse the first turn');
  assert.equal(of('generated', answer.request).finish, 'stop');
  // The client's copy of the call (its ids, its argument JSON) was rendered with the bytes
  // the model sampled, from the server's tool memory.
  const replay = of('tool_history', answer.request);
  console.log(`follow-up tool replay: ${JSON.stringify(replay)}`);
  assert.ok(replay && replay.memory === 1 && replay.canonical === 0 && replay.missing_ids === 0,
            'the call was not replayed exactly');

  const metrics = await (await fetch(`${base}/metrics`)).text();
  const statuses = metrics.split('\n').filter((l) => l.startsWith('ds4_requests_total{'));
  console.log(statuses.join('\n'));
  assert.ok(!statuses.some((l) => /status="[45]\d\d"/.test(l) && !l.endsWith(' 0')), 'a request was refused');
} catch (e) {
  failure = e;
} finally {
  server.kill('SIGTERM');
}
const code = await serverExit;
if (failure) {
  console.error(`kept for inspection: ${home} (trace.jsonl, script.json), ${work}`);
  throw failure;
}
rmSync(home, { recursive: true, force: true });
rmSync(work, { recursive: true, force: true });
assert.equal(code, 0, 'ds4-server did not shut down cleanly');
console.log(`${client} agent test passed`);
