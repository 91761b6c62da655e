#!/usr/bin/env python3
"""Example CGI program: word statistics over the posted text.

Dropped in plugins/ as an executable, it serves POST /wordstats. It reads the body from stdin
(CONTENT_LENGTH bytes), writes a CGI response on stdout, and may log to stderr. ?top=N sets how
many frequent words are listed. Corners cut: words are split on non-letters; no stemming.
"""
import collections
import json
import os
import re
import sys
import urllib.parse

length = int(os.environ.get("CONTENT_LENGTH") or 0)
text = sys.stdin.buffer.read(length).decode("utf-8", errors="replace")
query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
try:
    top = max(0, min(100, int(query.get("top", ["5"])[0])))
except ValueError:
    sys.stdout.write("Status: 400 Bad Request\nContent-Type: text/plain\n\ntop must be a number\n")
    sys.exit(0)

words = re.findall(r"[^\W\d_]+", text.lower())
counts = collections.Counter(words)
stats = {
    "words": len(words),
    "distinct": len(counts),
    "sentences": len(re.findall(r"[.!?]+", text)),
    "mean_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0,
    "top": counts.most_common(top),
}
sys.stdout.write("Content-Type: application/json\n\n")
sys.stdout.write(json.dumps(stats) + "\n")
