"""Card and phone numbers in free text: the digit rules of the PII scrubber.

What counts as a card: 13–19 digits that pass the Luhn check, written in any digit script
(``４１１１`` is read as ``4111``), in groups separated by one or two spaces, dashes, plus signs
(a form-encoded space), no-break or ideographic spaces, or dots between groups of three or
more digits (``4111.1111.1111.1111``; ``0.1 0.2 0.3`` is not a card). A longer run (a card next
to other numbers) has every window of whole groups that is a card cut out.

Phones: ``+`` followed by 7–15 digits (E.164; separators, a form-encoded ``+`` included);
North-American ``(NNN) NNN-NNNN`` and the like; trunk-prefixed national numbers; Indian
mobiles ``NNNNN NNNNN``. A bare run of digits is never taken for a phone number.

Every function here runs in time linear in its input and never raises.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

__all__ = ["CARD", "PHONE", "SEVEN_DIGITS", "luhn_valid", "redact_cards", "redact_phones"]

CARD = "[CARD]"
PHONE = "[PHONE]"

#: Between two digit groups of a card: one or two of these, or a dot between groups of 3+ digits.
_SEP = r"(?:[ \-+\u00a0\u2007\u202f\u3000\uff0d]{1,2}|(?<=\d\d\d)\.(?=\d\d\d))"
#: Maximal runs of digit groups, long enough to hold a card; entered only at a run's first digit.
_DIGIT_RUN = re.compile(rf"(?<!\d)\d(?:{_SEP}?\d){{12,}}(?!\d)")
_GROUP = re.compile(r"\d+")
_E164 = re.compile(r"(?<![\w+])\+\d(?:[ .\-()+]{0,2}\d){6,14}(?!\d)")
_NANP = re.compile(r"(?<![\w.\-+])(?:\(\d{3}\)\s?|\d{3}[\-. ])\d{3}[\-. ]\d{4}(?![\w\-]|\.\d)")
_TRUNK = re.compile(r"(?<![\w.\-+:/])0\d{1,5}(?:[ \-]\d{2,6}){1,2}(?![\w\-]|[.:/]\d)")
_IN_MOBILE = re.compile(r"(?<![\w.\-+:/])[6-9]\d{4} \d{5}(?![\w\-]|[.:/]\d)")
#: One pass for every phone shape; leftmost match wins, then the order below.
_PHONES = re.compile("|".join(f"(?P<{name}>{rx.pattern})" for name, rx in
                              (("e164", _E164), ("nanp", _NANP), ("trunk", _TRUNK), ("mobile", _IN_MOBILE))))
#: Fewer than seven digits (with short separators) cannot be a card or a phone number.
SEVEN_DIGITS = re.compile(r"\d(?:\D{0,4}\d){6}")


def _ascii(digits: str) -> str:
    """``digits`` (any script's decimal digits) as ASCII digits."""
    if digits.isascii():
        return digits
    return "".join(str(unicodedata.decimal(ch, 0)) for ch in digits)


def luhn_valid(digits: str) -> bool:
    """The Luhn check used by card numbers (digits of any script)."""
    total = 0
    for i, ch in enumerate(reversed(_ascii(digits))):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def redact_cards(text: str) -> str:
    """``text`` with every card number replaced by ``[CARD]``."""
    return _DIGIT_RUN.sub(_cards, text)


def redact_phones(text: str) -> str:
    """``text`` with every phone number replaced by ``[PHONE]``."""
    return _PHONES.sub(_phone, text)


def _cards(match: re.Match[str]) -> str:
    text = match.group(0)
    spans = [(m.start(), m.end()) for m in _GROUP.finditer(text)]
    if len(spans) == 1 and len(text) > 19:  # one long id: no card can be cut out of it
        return text
    digits = _ascii("".join(text[a:b] for a, b in spans))
    if len(digits) <= 19:
        return CARD if len(digits) >= 13 and luhn_valid(digits) else text
    return _cards_in_run(text, spans, digits)


#: A digit's value when the Luhn check doubles it.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _cards_in_run(text: str, spans: list[tuple[int, int]], digits: str) -> str:
    """A longer run (a card next to other numbers): redact every window of whole groups that is a card.

    Windows are 13–19 digits of consecutive groups; their union is cut, so a spurious
    window can only widen the cut. Each window's Luhn sum comes from two prefix sums
    (one per doubling parity), so a run costs O(groups), not O(groups × 19²).
    """
    values = [ord(ch) - 48 for ch in digits]
    # odd[q]: sum of the Luhn terms of digits[:q] when the odd positions are doubled; even[q] likewise.
    odd = [0, *itertools.accumulate(_DOUBLED[d] if p & 1 else d for p, d in enumerate(values))]
    even = [0, *itertools.accumulate(d if p & 1 else _DOUBLED[d] for p, d in enumerate(values))]
    offsets = [0, *itertools.accumulate(b - a for a, b in spans)]  # digit offset of each group, then the total
    count = len(spans)
    cuts: list[tuple[int, int]] = []  # merged as they come: window starts only grow
    first = 0  # the first group j for which groups[i..j] holds 13 digits; only moves forward
    for i in range(count):
        a = offsets[i]
        first = max(first, i)
        while first < count and offsets[first + 1] - a < 13:
            first += 1
        limit = a + 19
        best = -1
        for j in range(first, count):
            b = offsets[j + 1]
            if b > limit:
                break
            # The rightmost digit (b - 1) is never doubled, so the doubled ones have the other parity.
            if ((odd[b] - odd[a]) if b & 1 else (even[b] - even[a])) % 10 == 0:
                best = j
        if best < 0:
            continue
        start, end = spans[i][0], spans[best][1]
        if cuts and start <= cuts[-1][1] + 2:
            if end > cuts[-1][1]:
                cuts[-1] = (cuts[-1][0], end)
        else:
            cuts.append((start, end))
    if not cuts:
        return text
    out: list[str] = []
    last = 0
    for start, end in cuts:
        out.append(text[last:start])
        out.append(CARD)
        last = end
    out.append(text[last:])
    return "".join(out)


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.lastgroup == "trunk" and not 10 <= sum(c.isdigit() for c in text) <= 12:
        return text
    return PHONE
