"""python-redact: masks secrets and personal data in an event's text.

An enricher for event-collector:filter/event-filter@0.2.0 built with
componentize-py. It rewrites `message` and `note` (the same text under its two
names), replacing what looks like

    a JWT                          -> [REDACTED:jwt]
    Bearer <token>                 -> Bearer [REDACTED:token]
    an e-mail address              -> [REDACTED:email]
    an IPv6 address                -> [REDACTED:ipv6]
    an IPv4 address                -> [REDACTED:ipv4]
    a hex string of 32+ digits     -> [REDACTED:token]   (not a sha256:... digest)
    a base64-like run of 32+ chars -> [REDACTED:token]   (mixed case and digits)

Nothing found: the verdict is `keep` (the host skips re-validation). Config
(optional): {"redact": ["token", "email", "ip"]} to choose the classes (all by
default); "token" covers jwt, bearer, hex and base64.
"""
import ipaddress
import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Level, Verdict_Drop, Verdict_Keep, Verdict_Replace  # noqa: F401

JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE)
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}")
# Candidates only; ipaddress decides. Two colons at least, hex digits, dots (for ::ffff:1.2.3.4), a zone.
IPV6 = re.compile(r"(?<![0-9A-Za-z:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,}(?:%[0-9A-Za-z]+)?(?![0-9A-Za-z:])")
IPV4 = re.compile(r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![0-9]|\.\d)")
HEX = re.compile(r"(?<![0-9A-Za-z_:+/-])[0-9A-Fa-f]{32,}(?![0-9A-Za-z_+/-])")
B64 = re.compile(r"(?<![0-9A-Za-z+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![0-9A-Za-z+/_=-])")

CLASSES = ("token", "email", "ip")


def _ipv6(m):
    s = m.group(0)
    trail = ""
    while s.endswith("."):  # end of a sentence
        s, trail = s[:-1], trail + "."
    try:
        ipaddress.IPv6Address(s.split("%", 1)[0])
    except ValueError:
        return m.group(0)
    return "[REDACTED:ipv6]" + trail


def _b64(m):
    s = m.group(0)
    # Random tokens mix upper case, lower case and digits; words and paths do not.
    if re.search(r"[a-z]", s) and re.search(r"[A-Z]", s) and re.search(r"\d", s) and "//" not in s:
        return "[REDACTED:token]"
    return s


class Redactor:
    def __init__(self, classes):
        self.classes = set(classes)

    def redact(self, text):
        if "token" in self.classes:
            text = JWT.sub("[REDACTED:jwt]", text)
            text = BEARER.sub(lambda m: m.group(1) + " [REDACTED:token]", text)
        if "email" in self.classes:
            text = EMAIL.sub("[REDACTED:email]", text)
        if "ip" in self.classes:
            text = IPV6.sub(_ipv6, text)
            text = IPV4.sub("[REDACTED:ipv4]", text)
        if "token" in self.classes:
            text = HEX.sub("[REDACTED:token]", text)
            text = B64.sub(_b64, text)
        return text


_redactor = Redactor(CLASSES)


def _log(level, msg):
    host.log(level, msg)


class Filter(exports.Filter):
    def init(self, config: str) -> None:
        global _redactor
        try:
            c = json.loads(config)
        except ValueError as e:
            raise Err(f"invalid filter config: {e}")
        if not isinstance(c, dict):
            raise Err("invalid filter config: not a JSON object")
        unknown = set(c) - {"redact"}
        if unknown:
            raise Err(f"invalid filter config: unknown key(s) {sorted(unknown)} (only \"redact\" is allowed)")
        classes = c.get("redact", list(CLASSES))
        if not isinstance(classes, list) or not all(x in CLASSES for x in classes):
            raise Err(f"invalid filter config: \"redact\" must be a list of {list(CLASSES)}")
        _redactor = Redactor(classes)
        _log(Level.INFO, f"redacting {sorted(_redactor.classes)}")

    def process(self, fields, event: str):
        try:
            ev = json.loads(event)
        except ValueError as e:
            raise Err(f"not a normalized event: {e}")
        changed = False
        for key in ("message", "note"):
            text = ev.get(key)
            if isinstance(text, str) and text:
                red = _redactor.redact(text)
                if red != text:
                    ev[key] = red
                    changed = True
        if not changed:
            return Verdict_Keep()
        return Verdict_Replace(json.dumps(ev, ensure_ascii=False, separators=(",", ":")))
