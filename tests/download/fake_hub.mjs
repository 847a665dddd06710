// A stand-in for the Hugging Face hub, on 127.0.0.1, for scripts/download_model.sh tests.
//
//   node fake_hub.mjs --port-file F --log F [--require-token T] [--bad-hash NAME]
//                     [--cut-first] [--no-lfs NAME] [--no-ranges]
//
// Serves the five ds4 files of antirez/deepseek-v4-gguf with small deterministic
// contents, the way the hub does:
//   GET /api/models/antirez/deepseek-v4-gguf/tree/main  → [{type,oid,size,lfs:{oid,size,pointerSize},
//                                                          xetHash,path}, ...]
//   GET /antirez/deepseek-v4-gguf/resolve/main/FILE     → 302 to /cdn/FILE (the hub redirects
//                                                          LFS files to its CDN)
//   GET /cdn/FILE                                        → the bytes; honours "Range: bytes=N-"
//                                                          and "bytes=A-B" (206 + Content-Range,
//                                                          416 past the end)
// Faults for the tests:
//   --require-token T  the API and resolve answer 401 unless "Authorization: Bearer T"
//   --bad-hash NAME    the API publishes a wrong SHA-256 for NAME
//   --no-lfs NAME      the API lists NAME without its lfs object
//   --no-ranges        /cdn/ ignores Range headers and always sends the whole file (200)
//   --cut-first        the first /cdn/ body of each file stops after half its bytes and
//                      the connection is destroyed (Content-Length promised the whole)
// Every request is appended to the log as one JSON line {method,path,range,auth}.
// The chosen port (the OS picks a free one) is written to the port file once listening.
import { createHash } from 'node:crypto';
import { appendFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

const REPO = 'antirez/deepseek-v4-gguf';
const FILES = [
  'DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf',
  'DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf',
  'DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf',
  'DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf',
  'DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf',
];

function parseArgs(argv) {
  const opts = { cutFirst: false, noRanges: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port-file') opts.portFile = value();
    else if (a === '--log') opts.log = value();
    else if (a === '--require-token') opts.token = value();
    else if (a === '--bad-hash') opts.badHash = value();
    else if (a === '--no-lfs') opts.noLfs = value();
    else if (a === '--cut-first') opts.cutFirst = true;
    else if (a === '--no-ranges') opts.noRanges = true;
    else throw new Error(`unknown option ${a}`);
  }
  if (!opts.portFile || !opts.log) throw new Error('--port-file and --log are required');
  return opts;
}

// Deterministic bytes (xorshift32), different per file, sizes in the 100-300 KB range
// so that a cut lands mid-file and curl writes several chunks.
function fileContent(index) {
  const size = 100_000 + index * 50_001;
  const out = Buffer.alloc(size);
  let x = 0x9e3779b9 ^ (index + 1);
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const sha1 = (buf) => createHash('sha1').update(buf).digest('hex');

// Field order and extras as the real hub sends them: small git files first, then LFS
// entries with "lfs" (and "xetHash") before "path".
function treeListing(contents, opts) {
  const gitFiles = ['.gitattributes', 'README.md'].map((path) => {
    const data = Buffer.from(`${path} of the fake hub\n`);
    return { type: 'file', oid: sha1(data), size: data.length, path };
  });
  const lfsFiles = FILES.map((path) => {
    const data = contents.get(path);
    const entry = { type: 'file', oid: sha1(data), size: data.length };
    if (path !== opts.noLfs) {
      const oid = path === opts.badHash ? sha256(Buffer.from('not the file')) : sha256(data);
      entry.lfs = { oid, size: data.length, pointerSize: 134 };
      entry.xetHash = sha256(Buffer.concat([Buffer.from('xet'), data]));
    }
    entry.path = path;
    return entry;
  });
  return [...gitFiles, ...lfsFiles];
}

function authorized(req, opts) {
  return !opts.token || req.headers.authorization === `Bearer ${opts.token}`;
}

function sendError(res, status, message) {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ error: message }));
}

// Serves "bytes=A-" (what curl -C - sends) and "bytes=A-B" ranges, as a single part.
function serveBytes(req, res, data, cut, noRanges) {
  const range = noRanges ? undefined : req.headers.range;
  let start = 0;
  let end = data.length; // exclusive
  if (range) {
    const m = /^bytes=(\d+)-(\d*)$/.exec(range);
    if (!m) return sendError(res, 400, `unsupported range ${range}`);
    start = Number(m[1]);
    if (m[2] !== '') end = Math.min(Number(m[2]) + 1, data.length);
    if (start >= data.length || start >= end) {
      res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
      return res.end();
    }
  }
  const body = data.subarray(start, end);
  const headers = {
    'Content-Type': 'application/octet-stream',
    'Content-Length': body.length,
    'Accept-Ranges': 'bytes',
  };
  if (range) headers['Content-Range'] = `bytes ${start}-${end - 1}/${data.length}`;
  res.writeHead(range ? 206 : 200, headers);
  if (!cut) return res.end(body);
  // Promise the whole body, deliver half, drop the connection: curl exits 18.
  res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.socket.destroy());
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const contents = new Map(FILES.map((f, i) => [f, fileContent(i)]));
  const cutDone = new Set();
  const apiPath = `/api/models/${REPO}/tree/main`;
  const resolvePrefix = `/${REPO}/resolve/main/`;

  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    appendFileSync(opts.log, JSON.stringify({
      method: req.method, path, range: req.headers.range ?? null,
      auth: req.headers.authorization ?? null,
    }) + '\n');
    if (req.method !== 'GET') return sendError(res, 405, 'GET only');
    if (path === apiPath || path.startsWith(resolvePrefix)) {
      if (!authorized(req, opts)) return sendError(res, 401, 'Invalid credentials in Authorization header');
    }
    if (path === apiPath) {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end(JSON.stringify(treeListing(contents, opts)));
    }
    if (path.startsWith(resolvePrefix)) {
      const name = path.slice(resolvePrefix.length);
      if (!contents.has(name)) return sendError(res, 404, 'Entry not found');
      res.writeHead(302, { Location: `/cdn/${encodeURIComponent(name)}` });
      return res.end();
    }
    if (path.startsWith('/cdn/')) {
      const name = path.slice('/cdn/'.length);
      const data = contents.get(name);
      if (!data) return sendError(res, 404, 'Entry not found');
      const cut = opts.cutFirst && !cutDone.has(name);
      cutDone.add(name);
      return serveBytes(req, res, data, cut, opts.noRanges);
    }
    sendError(res, 404, 'not found');
  });
  server.listen(0, '127.0.0.1', () => {
    // Written then renamed, so a reader never sees an empty port file.
    writeFileSync(`${opts.portFile}.tmp`, String(server.address().port));
    renameSync(`${opts.portFile}.tmp`, opts.portFile);
  });
  process.on('SIGTERM', () => process.exit(0));
}

main();
