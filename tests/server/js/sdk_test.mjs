// ds4-server against the official SDKs: starts bin/ds4-server on the demo model at a free
// port, runs each check, stops the server with SIGTERM and expects exit status 0.
//   node sdk_test.mjs <ds4-server binary> <model.gguf>
// The demo model has random weights: checks are about protocol shapes, not words.
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { freePort, spawnServer, waitHealthy } from '../server_process.mjs';

const [bin, model] = process.argv.slice(2);
if (!bin || !model) {
  console.error('usage: node sdk_test.mjs <ds4-server> <model.gguf>');
  process.exit(2);
}

const port = await freePort();
const server = spawnServer(bin, ['-m', model, '--ctx', '2048', '--threads', '2', '--port', String(port)]);
const base = `http://127.0.0.1:${port}`;
await waitHealthy(base);

const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused' });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'unused' });
const tools = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
];
const checks = [];
const check = (name, fn) => checks.push([name, fn]);

check('chat create', async () => {
  const r = await openai.chat.completions.create({
    model: 'deepseek-chat', max_tokens: 4, messages: [{ role: 'user', content: 'hello' }],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 4);
});

check('chat stream', async () => {
  const stream = await openai.chat.completions.create({
    model: 'deepseek-v4-flash', max_tokens: 5, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'hello' }],
  });
  let chunks = 0, finish = null, usage = null;
  for await (const c of stream) {
    ++chunks;
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
    if (c.usage) usage = c.usage;
  }
  assert.ok(chunks >= 3);
  assert.ok(finish);
  assert.equal(usage.completion_tokens, 5);
});

check('chat tools', async () => {
  const r = await openai.chat.completions.create({
    model: 'deepseek-chat', max_tokens: 3, tools, tool_choice: 'auto',
    messages: [
      { role: 'user', content: 'weather in Paris?' },
      { role: 'assistant', content: '', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
    ],
  });
  assert.ok(['stop', 'length', 'tool_calls'].includes(r.choices[0].finish_reason));
});

check('completions', async () => {
  const r = await openai.completions.create({ model: 'deepseek-v4-flash', prompt: 'Once', max_tokens: 3 });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
});

check('responses create', async () => {
  const r = await openai.responses.create({ model: 'deepseek-chat', input: 'hello', max_output_tokens: 4 });
  assert.equal(r.object, 'response');
  assert.ok(['completed', 'incomplete'].includes(r.status));
  assert.ok(r.usage.input_tokens > 0);
});

check('responses stream + tools', async () => {
  const stream = await openai.responses.create({
    model: 'deepseek-chat', input: 'weather?', max_output_tokens: 4, stream: true,
    tools: [{ type: 'function', name: 'get_weather', parameters: tools[0].function.parameters }],
  });
  const types = [];
  for await (const e of stream) types.push(e.type);
  assert.equal(types[0], 'response.created');
  assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)));
});

check('messages create', async () => {
  const r = await anthropic.messages.create({
    model: 'deepseek-v4-flash', max_tokens: 4, system: 'brief', messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(r.type, 'message');
  assert.ok(r.id.startsWith('msg_'));
  assert.equal(r.stop_reason, 'max_tokens');
  assert.ok(r.usage.input_tokens + r.usage.cache_read_input_tokens > 0);
});

check('messages stream + tools', async () => {
  const stream = anthropic.messages.stream({
    model: 'deepseek-chat', max_tokens: 4,
    tools: [{ name: 'get_weather', description: 'w', input_schema: tools[0].function.parameters }],
    messages: [{ role: 'user', content: 'weather?' }],
  });
  const final = await stream.finalMessage();
  assert.equal(final.usage.output_tokens, 4);
  assert.ok(final.content.length >= 1);
});

check('anthropic error shape', async () => {
  await assert.rejects(
    anthropic.messages.create({ model: 'gpt-4', max_tokens: 4, messages: [{ role: 'user', content: 'x' }] }),
    (e) => e.status === 404,
  );
});

let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    ++failed;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}
server.proc.kill('SIGTERM');
const code = await server.exit;
if (code !== 0) {
  console.log(`FAIL server exit status ${code}`);
  ++failed;
}
console.log(`${checks.length - failed}/${checks.length} passed`);
process.exit(failed ? 1 : 0);
