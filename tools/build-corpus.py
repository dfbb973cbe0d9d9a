#!/usr/bin/python3
"""Build the bundled demo corpus data/demo/corpus.txt.

Sources (Debian packages; install with `apt-get install -y fortunes fortunes-zh bible-kjv`):
  - fortunes     English fortune cookies, /usr/share/games/fortunes/<name>
  - fortunes-zh  Chinese: tang300 (Tang poems), song100 (Song ci), chinese (proverbs,
                 Analects, classical poetry, misc. quotes); ANSI colour escapes stripped
  - bible-kjv    King James Bible via `bible -f`, one document per chapter; a seeded
                 subset capped at --bible-bytes so English does not swamp Chinese

Output: UTF-8, documents separated by lines containing only `%`, shuffled with a fixed
seed so that English and Chinese are interleaved. Stats go to stderr.

Usage: /usr/bin/python3 tools/build-corpus.py [--out data/demo/corpus.txt] [--seed 1234]
           [--bible-bytes 400000] [--no-bible]
"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import unicodedata

FORTUNE_DIR = "/usr/share/games/fortunes"
# ascii-art is pictures, not text; it would teach the model box drawing.
ENGLISH_FILES = [
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs",
    "education", "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd",
    "law", "linux", "linuxcookie", "literature", "love", "magic", "medicine", "men-women",
    "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes",
    "politics", "pratchett", "riddles", "science", "songs-poems", "sports", "startrek",
    "tao", "translate-me", "wisdom", "work", "zippy",
]
CHINESE_FILES = ["tang300", "song100", "chinese"]

BOOKS = {  # `bible -f` abbreviations -> names used in the chapter headings
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles",
    "Ezra": "Ezra", "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms",
    "Prv": "Proverbs", "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah",
    "Jer": "Jeremiah", "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea",
    "Joel": "Joel", "Amos": "Amos", "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah",
    "Nahum": "Nahum", "Hab": "Habakkuk", "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah",
    "Mal": "Malachi", "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John",
    "Acts": "Acts", "Rom": "Romans", "1Cor": "1 Corinthians", "2Cor": "2 Corinthians",
    "Gal": "Galatians", "Eph": "Ephesians", "Phi": "Philippians", "Col": "Colossians",
    "1Th": "1 Thessalonians", "2Th": "2 Thessalonians", "1Tim": "1 Timothy", "2Tim": "2 Timothy",
    "Titus": "Titus", "Phmn": "Philemon", "Heb": "Hebrews", "Jas": "James", "1Pet": "1 Peter",
    "2Pet": "2 Peter", "1Jn": "1 John", "2Jn": "2 John", "3Jn": "3 John", "Jude": "Jude",
    "Rev": "Revelation",
}

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[@-Z\\-_]")
OVERSTRIKE_RE = re.compile(r".\x08")  # nroff-style bold/underline: "_\bx" -> "x"
# CJK ideographs plus CJK and fullwidth punctuation: what "Chinese bytes" means in the stats.
CJK_RE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]+")


def clean(text):
    text = ANSI_RE.sub("", text)
    text = OVERSTRIKE_RE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ").replace("\u3000", "  ")
    text = "\n".join(line.expandtabs(8).rstrip() for line in text.split("\n"))
    # Drop remaining control/format characters (C0, C1, DEL, zero-width); keep newlines.
    text = "".join(
        ch for ch in text
        if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    # A line of only `%` would be read as a separator; indent it by one space.
    text = "\n".join(" %" if line == "%" else line for line in text.split("\n"))
    return text


def read_fortune_file(name):
    path = os.path.join(FORTUNE_DIR, name)
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8", errors="replace")
    docs = re.split(r"\n%[ \t]*\n", "\n" + raw.replace("\r\n", "\n") + "\n")
    out = []
    for d in docs:
        d = clean(d)
        if not d.strip() or d.strip() == "%":
            continue
        # The `chinese` file embeds chapters of the Debian Reference with box-drawn tables;
        # they are mostly U+2500 line art, which is noise for a language-model demo.
        if sum(1 for ch in d if "\u2500" <= ch <= "\u257f") > 0.02 * len(d):
            continue
        out.append(d)
    return out


def read_bible(max_bytes, rng):
    exe = shutil.which("bible")
    if exe is None:
        return []
    text = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], check=True,
                          capture_output=True).stdout.decode("utf-8", errors="replace")
    chapters = {}
    order = []
    for line in text.split("\n"):
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        key = (m.group(1), int(m.group(2)))
        if key not in chapters:
            chapters[key] = []
            order.append(key)
        chapters[key].append(f"{m.group(3)} {m.group(4)}")
    docs = [clean(f"{BOOKS.get(b, b)} {c}\n\n" + "\n".join(chapters[(b, c)])) for (b, c) in order]
    rng.shuffle(docs)
    picked, total = [], 0
    for d in docs:
        n = len(d.encode("utf-8")) + 3
        if total + n > max_bytes:
            continue
        picked.append(d)
        total += n
    return picked


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo", "corpus.txt")))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--bible-bytes", type=int, default=400_000)
    ap.add_argument("--no-bible", action="store_true")
    args = ap.parse_args()

    for name in ENGLISH_FILES + CHINESE_FILES:
        if not os.path.exists(os.path.join(FORTUNE_DIR, name)):
            sys.exit(f"build-corpus: missing {FORTUNE_DIR}/{name}; apt-get install -y fortunes fortunes-zh")

    rng = random.Random(args.seed)
    groups = {}
    groups["fortunes (en)"] = [d for n in ENGLISH_FILES for d in read_fortune_file(n)]
    groups["fortunes-zh (zh)"] = [d for n in CHINESE_FILES for d in read_fortune_file(n)]
    if not args.no_bible:
        groups["bible-kjv (en)"] = read_bible(args.bible_bytes, rng)
        if not groups["bible-kjv (en)"]:
            print("build-corpus: bible-kjv not installed; skipping", file=sys.stderr)

    seen = set()
    docs = []
    for g, ds in groups.items():
        kept = []
        for d in ds:
            if d in seen:
                continue
            seen.add(d)
            kept.append(d)
        groups[g] = kept
        docs.extend(kept)
    rng.shuffle(docs)

    body = "\n%\n".join(docs) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(body)
    os.replace(tmp, args.out)

    total = len(body.encode("utf-8"))
    print(f"wrote {args.out}: {total} bytes, {len(docs)} documents", file=sys.stderr)
    for g, ds in groups.items():
        b = sum(len(d.encode("utf-8")) for d in ds)
        print(f"  {g:18s} {len(ds):6d} docs {b:9d} bytes ({100 * b / total:5.1f}%)", file=sys.stderr)
    cjk = sum(len(m.encode("utf-8")) for m in CJK_RE.findall(body))
    ascii_bytes = sum(1 for b in body.encode("utf-8") if b < 0x80)
    print(f"  by script: CJK chars {100 * cjk / total:.1f}% of bytes, ASCII {100 * ascii_bytes / total:.1f}%, "
          f"other {100 * (total - cjk - ascii_bytes) / total:.1f}%", file=sys.stderr)


if __name__ == "__main__":
    main()
