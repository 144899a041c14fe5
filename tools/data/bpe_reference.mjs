// Runs the reference BPE implementations on a tokenizer.json: Hugging Face
// `tokenizers` (the Rust library, npm package `tokenizers`) and its pure-JS
// port `@huggingface/tokenizers`. Writes the fixtures of
// core/data/text_tokenizer_test.cc and times encoding for core/data/README.md.
//
//   npm install --prefix REF tokenizers@0.23.2 @huggingface/tokenizers@0.2.0
//   node tools/data/bpe_reference.mjs REF/node_modules encode TOKENIZER_JSON TEXT [IDS_OUT] [OURS]
//       ids of TEXT from both libraries (they must agree) to IDS_OUT as JSON with the
//       tokenizer's sha256, tokens/s of each,
//       and, given OURS (space-separated ids), whether ours are identical
//   node tools/data/bpe_reference.mjs REF/node_modules build TRAIN_TEXT K OUT_JSON
//       trains a ByteLevel BPE with the Rust library on TRAIN_TEXT, keeps its
//       first K merges, adds the bytes the text lacks and two added tokens,
//       and saves it with that library
import {createRequire} from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [modules, mode, ...args] = process.argv.slice(2);
const require = createRequire(path.resolve(modules) + '/');
const rust = require('tokenizers');
const js = require('@huggingface/tokenizers');

const byteLevel = {type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true};

async function rustIds(tok, text) {
  return (await tok.encode(text, null, {addSpecialTokens: false})).getIds();
}

function jsIds(tok, text) {
  return tok.encode(text, {add_special_tokens: false}).ids;
}

// The median call of `passes` after one warm-up call: wall seconds and CPU
// seconds of the process (the Rust library encodes on a worker thread).
async function time(f, passes = 5) {
  await f();
  const s = [];
  for (let p = 0; p < passes; ++p) {
    const t = process.hrtime.bigint();
    const c = process.cpuUsage();
    await f();
    const used = process.cpuUsage(c);
    s.push({wall: Number(process.hrtime.bigint() - t) / 1e9, cpu: (used.user + used.system) / 1e6});
  }
  return s.sort((a, b) => a.wall - b.wall)[Math.floor(passes / 2)];
}

// Consecutive lines, each document closed once it reaches 4096 bytes (as
// core/data/bpe_bench.cc cuts them).
function documents(text) {
  const docs = [];
  let doc = '', bytes = 0;
  for (const line of text.split(/(?<=\n)/)) {
    doc += line;
    bytes += Buffer.byteLength(line, 'utf8');
    if (bytes >= 4096) {
      docs.push(doc);
      doc = '';
      bytes = 0;
    }
  }
  if (doc) docs.push(doc);
  return docs;
}

async function encode(tokenizerPath, textPath, idsOut, ours) {
  const json = fs.readFileSync(tokenizerPath, 'utf8');
  const text = fs.readFileSync(textPath, 'utf8');
  const r = rust.Tokenizer.fromString(json);
  const j = new js.Tokenizer(JSON.parse(json), {});
  const a = await rustIds(r, text);
  const b = jsIds(j, text);
  const same = (x, y) => x.length === y.length && x.every((v, i) => v === y[i]);
  if (!same(a, b)) throw new Error('the two reference libraries disagree');
  const mb = Buffer.byteLength(text, 'utf8') / 1e6;
  const docs = documents(text);
  let docTokens = 0;
  for (const d of docs) docTokens += (await rustIds(r, d)).length;
  const rustDocs = async () => { for (const d of docs) await rustIds(r, d); };
  const jsDocs = () => { for (const d of docs) jsIds(j, d); };
  console.log('| library | input | tokens | warm Mtok/s | warm MB/s | warm Mtok/CPU-s |');
  console.log('|---|---|---|---|---|---|');
  for (const [name, input, tokens, f] of [
           ['tokenizers 0.23.2 (Rust)', 'one string', a.length, () => rustIds(r, text)],
           ['tokenizers 0.23.2 (Rust)', `${docs.length} documents`, docTokens, rustDocs],
           ['@huggingface/tokenizers 0.2.0 (JS)', 'one string', a.length, () => jsIds(j, text)],
           ['@huggingface/tokenizers 0.2.0 (JS)', `${docs.length} documents`, docTokens, jsDocs]]) {
    const {wall, cpu} = await time(f);
    console.log(`| ${name} | ${input} | ${tokens} | ${(tokens / wall / 1e6).toFixed(2)} | ` +
                `${(mb / wall).toFixed(2)} | ${(tokens / cpu / 1e6).toFixed(2)} |`);
  }
  if (idsOut) {
    const sha = crypto.createHash('sha256').update(fs.readFileSync(tokenizerPath)).digest('hex');
    fs.writeFileSync(idsOut, JSON.stringify({tokenizer_sha256: sha, ids: a}) + '\n');
  }
  if (ours) {
    const o = fs.readFileSync(ours, 'utf8').trim().split(/\s+/).map(Number);
    console.log(same(o, a) ? `ours: identical (${o.length} ids)` : 'ours: DIFFERENT');
  }
}

async function build(trainPath, keep, out) {
  const empty = {
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: byteLevel, post_processor: null, decoder: byteLevel,
    model: {type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
            end_of_word_suffix: null, fuse_unk: false, byte_fallback: false,
            ignore_merges: false, vocab: {}, merges: []},
  };
  const trainer = rust.Tokenizer.fromString(JSON.stringify(empty));
  trainer.train([trainPath]);
  const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bpe-')), 'trained.json');
  trainer.save(tmp);
  const trained = JSON.parse(fs.readFileSync(tmp, 'utf8'));
  // The trainer numbers the alphabet first, then one token per merge.
  const vocab = Object.entries(trained.model.vocab).sort((x, y) => x[1] - y[1]);
  const alphabet = vocab.length - trained.model.merges.length;
  const kept = Object.fromEntries(vocab.slice(0, alphabet + Number(keep)));
  let next = alphabet + Number(keep);
  for (const c of rust.byteLevelAlphabet().sort()) {
    if (!(c in kept)) kept[c] = next++;
  }
  const model = rust.BPE.init(kept, trained.model.merges.slice(0, Number(keep)), {});
  const tok = new rust.Tokenizer(model);
  tok.setPreTokenizer(rust.byteLevelPreTokenizer(false, true));
  tok.addSpecialTokens(['<|endoftext|>']);
  tok.addTokens(['[[note]]']);
  tok.save(out, false);
  console.log(`${out}: ${Object.keys(kept).length} model tokens, ${keep} merges`);
}

if (mode === 'encode') {
  await encode(...args);
} else if (mode === 'build') {
  await build(...args);
} else {
  throw new Error('mode must be encode or build');
}
