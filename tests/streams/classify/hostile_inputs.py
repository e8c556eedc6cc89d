"""A seeded generator of hostile feed messages, for fuzzing validation and the worker.

Each message is a (key, value) record; `value` may be None (a tombstone). The mix covers
random bytes, invalid UTF-8, nesting at and beyond the depth limit, JSON near and above
the size limit, a megabyte of text, control characters, mixed scripts and emoji, lone
surrogate escapes, nulls and wrong types in every field, empty values, and valid items.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from streams.messages import MAX_ID_CHARS, Limits

Record = tuple[bytes | None, bytes | None]

FIELDS = ("id", "text", "source", "meta", "ts")
SCRIPTS = [
    "Markets rally as rates fall",
    "Центробанк повысил ставку",
    "股市今天大幅上涨",
    "الأسواق ترتفع بعد القرار",
    "शेयर बाजार में तेजी",
    "ตลาดหุ้นปรับตัวขึ้น",
    "주식 시장이 상승했다",
    "Ελληνικά νέα σήμερα",
    "עברית \u200fמימין לשמאל\u200e mixed",
    "emoji 📈🚀🔥 👩\u200d👩\u200d👧\u200d👦 🇺🇦🇯🇵 ✊🏿",
    "Z\u0351\u0358a\u0334\u0322l\u0337g\u0315o\u0489 t\u0335e\u0336x\u0321t",
    "zero\u200bwidth\u2060joiner\ufeffbom",
    "\U0001d573\U0001d58a\U0001d586\U0001d594\U0001d599 math letters",
]
CONTROL_CHARS = "".join(chr(c) for c in [*range(0x00, 0x20), 0x7F, 0x85, 0x2028, 0x2029])
LONE_SURROGATES = ["\\ud800", "\\udfff", "\\udc00 tail", "\\ud83d", "x\\ude00x", "\\ud800\\ud800"]
INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3",  # a lead byte without its continuation
    b"\x80\x80",  # lone continuation bytes
    b"\xc0\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf0\x9f\x98",  # a cut 4-byte sequence (emoji)
]


def wrong_values(rng: random.Random) -> list[Any]:
    """Values of every JSON type, including the ones no field accepts."""
    return [
        None,
        True,
        False,
        0,
        -1,
        2**63,
        1.5,
        -0.0,
        "",
        " \t\n",
        "ok",
        [],
        [1, "a", None],
        {},
        {"nested": {"deeper": [1, {"x": None}]}},
        rng.choice(SCRIPTS),
    ]


def _doc(rng: random.Random, text: Any = None, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": f"h-{rng.getrandbits(40):x}", "text": text or rng.choice(SCRIPTS)}
    doc.update(fields)
    return doc


def _dump(doc: Any, rng: random.Random) -> bytes:
    return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()


def _nested(depth: int, inner: str = '"x"') -> str:
    """`depth` levels of alternating objects and arrays around `inner`."""
    opened = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closed = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opened + inner + closed


def _random_bytes(rng: random.Random, _limits: Limits) -> bytes:
    return rng.randbytes(rng.randint(1, 300))


def _invalid_utf8(rng: random.Random, _limits: Limits) -> bytes:
    valid = _dump(_doc(rng), rng) if rng.random() < 0.7 else rng.choice(SCRIPTS).encode()
    cut = rng.randint(0, len(valid))
    return valid[:cut] + rng.choice(INVALID_UTF8) + valid[cut:]


def _deep(rng: random.Random, limits: Limits) -> bytes:
    kind = rng.randrange(5)
    limit = limits.max_json_depth
    if kind == 0:  # meta nested exactly to the limit (the outer object counts): accepted
        return f'{{"text": "deep but fine", "meta": {_nested(limit - 1)}}}'.encode()
    if kind == 1:  # one level beyond
        return f'{{"text": "one too deep", "meta": {_nested(limit)}}}'.encode()
    if kind == 2:  # far beyond, enough to exhaust a recursive parser
        depth = rng.choice([100, 5_000, 200_000])
        return ('{"text": "x", "meta": ' + "[" * depth + "]" * depth + "}").encode()
    if kind == 3:  # unbalanced opening brackets only
        return ("[" * rng.randint(limit + 1, 50_000)).encode()
    # brackets inside strings do not nest
    return json.dumps({"text": "[[[[{{{{" * 10 + "]]]]}}}}", "id": "{" * 40}).encode()


def _huge(rng: random.Random, limits: Limits) -> bytes:
    """JSON at, just under and just over the byte limit (padding in `meta`)."""
    target = limits.max_message_bytes + rng.choice([-100, -1, 0, 1, 2_000])
    head = {"id": f"huge-{rng.getrandbits(32):x}", "text": rng.choice(SCRIPTS)}
    empty = len(json.dumps({**head, "meta": {"pad": ""}}).encode())
    pad = "p" * max(0, target - empty)
    return json.dumps({**head, "meta": {"pad": pad}}).encode()


def _megabyte_text(rng: random.Random, _limits: Limits) -> bytes:
    words = [w for s in SCRIPTS for w in s.split()]
    out: list[str] = []
    size = 0
    while size < 1_000_000:
        word = rng.choice(words)
        out.append(word)
        size += len(word.encode()) + 1
    text = " ".join(out)
    if rng.random() < 0.5:
        return text.encode()[:1_000_000].decode("utf-8", "ignore").encode()
    return json.dumps({"id": f"mb-{rng.getrandbits(32):x}", "text": text[:1_000_000]}).encode()


def _control(rng: random.Random, _limits: Limits) -> bytes:
    noise = "".join(rng.choice(CONTROL_CHARS) for _ in range(rng.randint(1, 40)))
    kind = rng.randrange(4)
    if kind == 0:  # plain text with control characters inside
        return f"breaking{noise}news".encode()
    if kind == 1:  # plain text made of nothing but control characters
        return noise.encode()
    if kind == 2:  # escaped inside JSON strings: valid JSON
        return _dump(_doc(rng, text=f"alert{noise}now", source=noise, meta={noise: noise}), rng)
    # raw (unescaped) inside a JSON string: invalid JSON
    return b'{"text": "raw ' + noise.encode() + b' controls"}'


def _scripts(rng: random.Random, _limits: Limits) -> bytes:
    text = " ".join(rng.sample(SCRIPTS, rng.randint(1, 5)))
    if rng.random() < 0.3:
        return text.encode()
    return _dump(_doc(rng, text=text, source=rng.choice(SCRIPTS), meta={"tag": text}), rng)


def _wrong_types(rng: random.Random, _limits: Limits) -> bytes:
    doc = _doc(rng)
    for name in rng.sample(FIELDS, rng.randint(1, 3)):
        doc[name] = rng.choice(wrong_values(rng))
    if rng.random() < 0.2:
        del doc[rng.choice(list(doc))]
    return _dump(doc, rng)


def _odd_numbers(rng: random.Random, _limits: Limits) -> bytes:
    field = rng.choice(["ts", "id", "meta"])
    number = rng.choice(
        ["NaN", "Infinity", "-Infinity", "1" * 5_000, "-" + "9" * 500, "1e-400", "1e999", "-1e400"]
    )
    value = f'{{"n": {number}}}' if field == "meta" else number
    return (
        f'{{"id": "num-{rng.getrandbits(32):x}", "text": "numbers", "{field}": {value}}}'.encode()
    )


def _surrogates(rng: random.Random, _limits: Limits) -> bytes:
    lone = rng.choice(LONE_SURROGATES)
    where = rng.choice(["text", "id", "source", "meta_key", "meta_value"])
    text = f"lone {lone} here" if where == "text" else "fine text"
    parts = [f'"text": "{text}"']
    if where == "id":
        parts.append(f'"id": "{lone}"')
    elif where == "source":
        parts.append(f'"source": "{lone}"')
    elif where == "meta_key":
        parts.append(f'"meta": {{"{lone}": 1}}')
    elif where == "meta_value":
        parts.append(f'"meta": {{"k": ["{lone}"]}}')
    if rng.random() < 0.3:  # a valid pair for contrast
        parts.append('"pair": "\\ud83d\\ude00"')
    return ("{" + ", ".join(parts) + "}").encode()


def _limits_edges(rng: random.Random, limits: Limits) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return json.dumps({"text": "t" * (limits.max_text_chars + rng.choice([-1, 0, 1]))}).encode()
    if kind == 1:
        return json.dumps({"id": "i" * (MAX_ID_CHARS + rng.choice([0, 1])), "text": "x"}).encode()
    if kind == 2:
        return ("w " * ((limits.max_text_chars + rng.choice([-2, 2])) // 2)).encode()
    return json.dumps({"id": int("9" * rng.randint(1, 600)), "text": "big int id"}).encode()


def expanding_output(max_message_bytes: int, item_id: str = "exp") -> bytes:
    """Valid and half the byte limit, but its labeled output is nearly four times larger:
    each `1e15` is re-serialised as `1000000000000000.0`."""
    numbers = ",".join(["1e15"] * (max_message_bytes // 10))
    return f'{{"id": "{item_id}", "text": "numbers", "meta": {{"n": [{numbers}]}}}}'.encode()


def _expanding(rng: random.Random, limits: Limits) -> bytes:
    return expanding_output(limits.max_message_bytes, f"exp-{rng.getrandbits(32):x}")


EMPTY_VALUES: list[bytes | None] = [
    None,
    b"",
    b" ",
    b"\n\t\r ",
    b"{}",
    b"[]",
    b'""',
    b"null",
    b"0",
    b'{"text": ""}',
    b'{"text": null}',
    b'{"id": "", "text": "x"}',
    b"\xef\xbb\xbf",
    b"\x00",
]


def _empty(rng: random.Random, _limits: Limits) -> bytes | None:
    return rng.choice(EMPTY_VALUES)


def _valid(rng: random.Random, _limits: Limits) -> bytes:
    if rng.random() < 0.3:
        return rng.choice(SCRIPTS).encode()
    doc = _doc(
        rng,
        source=rng.choice(["wire", "social", None]),
        ts=rng.choice([None, 1_700_000_000, 1.7e9, "2024-01-01T00:00:00Z"]),
        meta=rng.choice([None, {"region": "eu", "tags": ["a", "b"]}]),
    )
    return _dump(doc, rng)


KINDS: dict[str, tuple[int, Callable[[random.Random, Limits], bytes | None]]] = {
    # name: (weight, generator)
    "random_bytes": (30, _random_bytes),
    "invalid_utf8": (25, _invalid_utf8),
    "deep": (20, _deep),
    "huge": (5, _huge),
    "megabyte_text": (2, _megabyte_text),
    "control": (25, _control),
    "scripts": (25, _scripts),
    "wrong_types": (50, _wrong_types),
    "odd_numbers": (15, _odd_numbers),
    "surrogates": (20, _surrogates),
    "limits": (15, _limits_edges),
    "expanding": (1, _expanding),
    "empty": (20, _empty),
    "valid": (40, _valid),
}


def hostile_feed(n: int, seed: int, limits: Limits) -> list[tuple[str, bytes | None, bytes | None]]:
    """`n` (kind, key, value) hostile messages, the same for the same seed and limits.

    Every kind appears at least once; keys are mostly absent, sometimes arbitrary bytes
    (always present on a tombstone, a record with no value).
    """
    rng = random.Random(seed)
    names = list(KINDS)
    weights = [KINDS[k][0] for k in names]
    kinds = names + rng.choices(names, weights, k=max(0, n - len(names)))
    rng.shuffle(kinds)
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for kind in kinds:
        value = KINDS[kind][1](rng, limits)
        key = None if rng.random() < 0.7 else rng.randbytes(rng.randint(0, 16))
        if value is None and key is None:  # a tombstone needs a key
            key = b"tombstone"
        out.append((kind, key, value))
    return out
