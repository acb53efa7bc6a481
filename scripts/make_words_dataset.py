"""Builds data/words_en_nl.csv, the word-language corpus of the `word_language` example.

Sources (Debian bookworm packages, both permissive licences, notices in data/README.md):
  wamerican 2020.12.07-2: /usr/share/dict/american-english (SCOWL, Kevin Atkinson; permissive)
  wdutch 1:2.20.19-2:     /usr/share/dict/dutch (OpenTaal; BSD or CC BY 3.0)

Rule: lower-case words of 4 to 12 letters a-z only (no capitals: names; no apostrophes, digits or
accents), minus the words that are in both lists; then 4,000 of each language, every k-th word of
the sorted list so the sample spans the alphabet; interleaved and written as `word,language`.

Usage: apt-get download wamerican wdutch; dpkg-deb -x each into DIR; python3 this.py DIR
"""
import os
import re
import sys

root = sys.argv[1]
ok = re.compile(r"^[a-z]{4,12}$")


def words(path):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return {w.strip() for w in f if ok.match(w.strip())}


en = words("usr/share/dict/american-english")
nl = words("usr/share/dict/dutch")
both = en & nl
en, nl = sorted(en - both), sorted(nl - both)


def sample(ws, n=4000):
    k = len(ws) / n
    return [ws[int(i * k)] for i in range(n)]


en, nl = sample(en), sample(nl)
out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "words_en_nl.csv")
with open(out, "w") as f:
    f.write("word,language\n")
    for a, b in zip(en, nl):
        f.write(f"{a},en\n{b},nl\n")
print(len(en), len(nl), "words ->", out)
