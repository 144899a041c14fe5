#!/usr/bin/env python3
"""Turns the real world's raw folders into a JSON Lines corpus.

    make_corpus.py RAW_DIR OUT_DIR [--text_mb=12] [--val_text_mb=0.6]
        [--cifar_train_per_class=5000] [--cifar_test_per_class=1000]
        [--chunk_bytes=2000] [--seed=1234]

RAW_DIR holds (README.md beside this file says where each comes from):
  gutenberg/<Author>/<Title>.txt   Project Gutenberg books
  cifar10/{train,test}/<class>/NNNN.jpg
  gcompris/<lang>/<category>/<word>.ogg and gcompris/LICENSE (speaker per file)
  fsdd/recordings/<digit>_<speaker>_<take>.{wav,flac}

Writes OUT_DIR/train.jsonl, OUT_DIR/val.jsonl (one document per line, the
corpus format of core/data/README.md, media by absolute path) and
OUT_DIR/corpus.json (what went in). Splits: by book (a seeded hash of the
book's path), by the image's CIFAR split, by speaker (VAL_SPEAKERS). Only the
standard library; nothing is fetched.
"""

import argparse
import hashlib
import json
import os
import random
import re
import sys

# Held-out voices: every clip of these speakers is val, every other clip train.
# One FSDD speaker, and GCompris speakers with about 6% of its clips, among them
# the one who speaks the English alphabet, colours and countries (transcribed).
VAL_SPEAKERS = {"fsdd:theo", "Julia Wycherley", "Niko Lewman", "Gabriella Agrusti",
                "Ulrika Uddeborg"}
# One book in VAL_BOOK_MODULUS is val (by the hash of its path).
VAL_BOOK_MODULUS = 40
# Books this large are compilations (complete works, collected stories) that
# would fill a small budget alone; they are left out.
MAX_BOOK_BYTES = 4 << 20
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
START_RE = re.compile(r"^\*\*\*\s*START OF (THIS|THE) PROJECT GUTENBERG", re.I)
END_RE = re.compile(r"^(\*\*\*\s*END OF (THIS|THE) PROJECT GUTENBERG|End of (the )?Project Gutenberg)",
                    re.I)


def fail(message):
    sys.exit(f"make_corpus: {message}")


def stable_hash(*parts):
    """A hash that is the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "little")


# ---- text: Project Gutenberg books -------------------------------------------------------


def strip_gutenberg(text):
    """The book between the START and END markers, or None without a START marker."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if START_RE.match(line)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if END_RE.match(lines[i])), len(lines))
    return "\n".join(lines[start + 1:end]).strip()


def chunk_book(body, chunk_bytes):
    """Paragraphs packed into chunks of at most chunk_bytes UTF-8 bytes; a longer
    paragraph is cut at spaces."""
    pieces = []
    for paragraph in re.split(r"\n\s*\n", body):
        paragraph = " ".join(paragraph.split())
        while len(paragraph.encode()) > chunk_bytes:
            cut = paragraph.rfind(" ", 0, chunk_bytes // 2)
            cut = cut if cut > 0 else chunk_bytes // 2
            pieces.append(paragraph[:cut])
            paragraph = paragraph[cut:].lstrip()
        if paragraph:
            pieces.append(paragraph)
    chunks, current, size = [], [], 0
    for piece in pieces:
        n = len(piece.encode()) + 2
        if current and size + n > chunk_bytes:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(piece)
        size += n
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def books(raw, args, stats):
    """(split, documents) of the books, drawn in a seeded order until each split's
    byte budget is spent."""
    root = os.path.join(raw, "gutenberg")
    paths = []
    for folder, _, files in os.walk(root):
        paths += [os.path.relpath(os.path.join(folder, f), root) for f in files if f.endswith(".txt")]
    if not paths:
        fail(f"{root}: no .txt books")
    paths.sort(key=lambda p: stable_hash(str(args.seed), p))
    budget = {"train": args.text_mb * 1e6, "val": args.val_text_mb * 1e6}
    out = {"train": [], "val": []}
    for path in paths:
        split = "val" if stable_hash("book", path) % VAL_BOOK_MODULUS == 0 else "train"
        if budget[split] <= 0:
            continue
        if os.path.getsize(os.path.join(root, path)) >= MAX_BOOK_BYTES:
            stats["books_too_large"] += 1
            continue
        with open(os.path.join(root, path), "rb") as f:
            body = strip_gutenberg(f.read().decode("utf-8", errors="replace"))
        if body is None:
            stats["books_without_markers"] += 1
            continue
        chunks = chunk_book(body, args.chunk_bytes)
        budget[split] -= sum(len(c.encode()) for c in chunks)
        out[split] += [[{"text": c}] for c in chunks]
        stats[f"{split}_books"] += 1
        stats[f"{split}_text_bytes"] += sum(len(c.encode()) for c in chunks)
    return out


# ---- images: CIFAR-10 --------------------------------------------------------------------


def cifar(raw, args, rng, stats):
    root = os.path.join(raw, "cifar10")
    out = {"train": [], "val": []}
    for folder, split, per_class in (("train", "train", args.cifar_train_per_class),
                                     ("test", "val", args.cifar_test_per_class)):
        classes = sorted(os.listdir(os.path.join(root, folder))) if os.path.isdir(
            os.path.join(root, folder)) else []
        if not classes:
            fail(f"{os.path.join(root, folder)}: no class folders (CIFAR-10 has 10)")
        for name in classes:
            files = sorted(f for f in os.listdir(os.path.join(root, folder, name)) if f.endswith(".jpg"))
            for f in files[:per_class]:
                image = {"image": os.path.abspath(os.path.join(root, folder, name, f))}
                caption = {"text": f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"}
                out[split].append([caption, image] if rng.random() < 0.5 else [image, caption])
                stats[f"{split}_images"] += 1
    return out


# ---- speech: GCompris voices and FSDD ----------------------------------------------------


def speaker_name(credit):
    """'Julia Wycherley 2011 / GPL' -> 'Julia Wycherley'; None for credits that name
    no person (a licence or a web site)."""
    name = credit.split(" / ")[0]
    name = re.sub(r"<[^>]*>|\([^)]*\)|\b\d{4}\b|\S+@\S+", " ", name)
    name = " ".join(name.replace(" - ", " ").split()).strip(" ,-")
    if not name or re.search(r"GPL|Public Domain|http|Creative Common", name, re.I):
        return None
    return name


def gcompris_speakers(root):
    """{'en/words/apple.ogg': speaker} from the LICENSE file's per-folder lists."""
    path = os.path.join(root, "LICENSE")
    if not os.path.isfile(path):
        fail(f"{path}: missing (it names the speaker of every clip)")
    speakers, folder = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("./") and line.endswith(":"):
                folder = line[2:-1]
            elif folder and line.strip() and line.split()[0].endswith(".ogg"):
                file, credit = line.split(None, 1) if len(line.split()) > 1 else (line.strip(), "")
                name = speaker_name(credit)
                lang = folder.split("/")[0]
                speakers[f"{folder}/{file}"] = name if name else f"{lang}:unnamed"
    return speakers


def english_transcript(category, stem):
    """The words an English clip speaks, where its file name says them."""
    if category in ("words", "colors"):
        return stem.split("-")[0].replace("_", " ")
    if category == "geography":
        return stem.replace("_", " ")
    if category == "alphabet":
        return chr(int(stem[1:], 16)) if re.fullmatch(r"U[0-9A-F]{4}", stem) else stem
    return None  # intro and misc clips name an activity or a phrase id, not their words


def speech(raw, rng, stats):
    out = {"train": [], "val": []}
    speakers_seen = {"train": set(), "val": set()}

    def add(path, speaker, transcript):
        split = "val" if speaker in VAL_SPEAKERS else "train"
        audio = {"audio": os.path.abspath(path)}
        if transcript is None:
            out[split].append([audio])
        else:
            text = {"text": transcript}
            out[split].append([audio, text] if rng.random() < 0.5 else [text, audio])
            stats[f"{split}_transcribed_clips"] += 1
        stats[f"{split}_clips"] += 1
        speakers_seen[split].add(speaker)

    root = os.path.join(raw, "gcompris")
    speakers = gcompris_speakers(root)
    for folder, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if not f.endswith(".ogg"):
                continue
            rel = os.path.relpath(os.path.join(folder, f), root)
            parts = rel.split(os.sep)
            speaker = speakers.get("/".join(parts))
            if speaker is None:
                stats["clips_without_speaker"] += 1
                continue
            transcript = english_transcript(parts[1], f[:-4]) if parts[0] == "en" and len(parts) == 3 else None
            add(os.path.join(folder, f), speaker, transcript)
    fsdd = os.path.join(raw, "fsdd", "recordings")
    if not os.path.isdir(fsdd):
        fail(f"{fsdd}: missing")
    for f in sorted(os.listdir(fsdd)):
        m = re.fullmatch(r"(\d)_([a-z]+)_(\d+)\.(wav|flac)", f)
        if not m:
            fail(f"{os.path.join(fsdd, f)}: not a recording named <digit>_<speaker>_<take>.wav|flac")
        add(os.path.join(fsdd, f), f"fsdd:{m.group(2)}", DIGIT_WORDS[int(m.group(1))])
    for split in out:
        stats[f"{split}_speaker_count"] = len(speakers_seen[split])
    if speakers_seen["train"] & speakers_seen["val"]:
        fail(f"speakers in both splits: {sorted(speakers_seen['train'] & speakers_seen['val'])}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw")
    parser.add_argument("out")
    parser.add_argument("--text_mb", type=float, default=12, help="train book text, MB")
    parser.add_argument("--val_text_mb", type=float, default=0.6, help="val book text, MB")
    parser.add_argument("--cifar_train_per_class", type=int, default=5000)
    parser.add_argument("--cifar_test_per_class", type=int, default=1000)
    parser.add_argument("--chunk_bytes", type=int, default=2000, help="book chunk size, bytes")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    if not os.path.isdir(args.raw):
        fail(f"{args.raw}: not a folder")
    rng = random.Random(args.seed)
    stats = {k: 0 for k in ("books_without_markers", "books_too_large", "clips_without_speaker", "train_books", "val_books",
                            "train_text_bytes", "val_text_bytes", "train_images", "val_images",
                            "train_clips", "val_clips", "train_transcribed_clips",
                            "val_transcribed_clips")}
    sources = [books(args.raw, args, stats), cifar(args.raw, args, rng, stats), speech(args.raw, rng, stats)]
    os.makedirs(args.out, exist_ok=True)
    for split in ("train", "val"):
        documents = [d for source in sources for d in source[split]]
        rng.shuffle(documents)  # modalities mixed within each build unit
        stats[f"{split}_documents"] = len(documents)
        with open(os.path.join(args.out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for d in documents:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    stats["args"] = {k: v for k, v in vars(args).items() if k not in ("raw", "out")}
    stats["val_speakers"] = sorted(VAL_SPEAKERS)
    with open(os.path.join(args.out, "corpus.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps({k: v for k, v in stats.items() if k != "args"}))


if __name__ == "__main__":
    main()
