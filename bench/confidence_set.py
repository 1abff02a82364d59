"""A labelled set whose answers are checked mechanically, for bench/confidence.py.

Deterministic (seeded): arithmetic of graded difficulty, short factual questions with one right
answer, and JSON tasks (asked plainly, and again with ``response_format: json_object``, which makes
llama.cpp constrain decoding with a JSON grammar). Every item is kept: no item was dropped after
seeing the model's answers. Factual questions whose right answer depends on convention (number of
continents, longest river, largest desert, nearest star) were left out before any run.

python bench/confidence_set.py   # prints the counts per category and a few items
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEED = 15  # the issue number


@dataclass(frozen=True)
class Item:
    id: str
    category: str  # arithmetic | factual | json | json_grammar
    level: str  # finer grouping: add1, capital, symbol, keys2, ...
    prompt: str
    max_tokens: int
    check: Callable[[str], bool] = field(repr=False, compare=False)
    json_mode: bool = False


# ---- arithmetic ---------------------------------------------------------------------------------

_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
]  # fmt: skip
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)|\d+|\b(?:" + "|".join(_WORDS) + r")\b", re.IGNORECASE)


def numbers_in(text: str) -> list[int]:
    out = []
    for m in _NUMBER.findall(text):
        w = m.lower()
        out.append(_WORDS.index(w) if w in _WORDS else int(w.replace(",", "")))
    return out


def _arith_check(a: int, b: int, result: int) -> Callable[[str], bool]:
    # Right = the result is stated and no number other than the operands and the result is
    # (a hedge such as "12 or 13" is wrong). Digits, thousands separators, or words up to twenty.
    def check(answer: str) -> bool:
        found = numbers_in(answer)
        return result in found and set(found) <= {a, b, result}

    return check


def _subtraction(r: random.Random) -> tuple[int, int]:
    a = r.randint(21, 99)
    return a, r.randint(10, a - 1)


_ARITH_LEVELS: list[tuple[str, int, str, Callable[[random.Random], tuple[int, int]]]] = [
    ("add1", 30, "+", lambda r: (r.randint(1, 9), r.randint(1, 9))),
    ("add2", 30, "+", lambda r: (r.randint(10, 99), r.randint(10, 99))),
    ("sub2", 25, "-", _subtraction),
    ("mul1", 30, "*", lambda r: (r.randint(2, 9), r.randint(2, 9))),
    ("mul2", 25, "*", lambda r: (r.randint(12, 99), r.randint(3, 9))),
    ("mul3", 20, "*", lambda r: (r.randint(100, 999), r.randint(11, 99))),
]


def arithmetic(rng: random.Random) -> list[Item]:
    items = []
    for level, n, op, draw in _ARITH_LEVELS:
        seen: set[tuple[int, int]] = set()
        while len(seen) < n:
            a, b = draw(rng)
            if (a, b) in seen or (op != "-" and (b, a) in seen):
                continue
            seen.add((a, b))
            result = a + b if op == "+" else a - b if op == "-" else a * b
            items.append(
                Item(
                    id=f"{level}-{a}{op}{b}",
                    category="arithmetic",
                    level=level,
                    prompt=f"What is {a} {op} {b}? Answer with just the number.",
                    max_tokens=24,
                    check=_arith_check(a, b, result),
                )
            )
    return items


# ---- factual ------------------------------------------------------------------------------------

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "the United Kingdom": "London", "Ireland": "Dublin", "Japan": "Tokyo", "China": "Beijing|Peking",
    "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "India": "New Delhi",
    "Kenya": "Nairobi", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest",
    "the Czech Republic": "Prague", "Turkey": "Ankara", "Iran": "Tehran|Teheran", "Iraq": "Baghdad",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul", "the Philippines": "Manila",
    "Peru": "Lima", "Chile": "Santiago", "Colombia": "Bogota", "Cuba": "Havana", "Belgium": "Brussels",
    "the Netherlands": "Amsterdam", "Nigeria": "Abuja", "Ethiopia": "Addis Ababa", "Morocco": "Rabat",
    "Saudi Arabia": "Riyadh", "Pakistan": "Islamabad", "Ukraine": "Kyiv|Kiev", "Romania": "Bucharest",
    "Iceland": "Reykjavik", "New Zealand": "Wellington", "Venezuela": "Caracas", "Afghanistan": "Kabul",
    "Syria": "Damascus", "Ghana": "Accra", "Senegal": "Dakar",
}  # fmt: skip

# Iodine (I) is left out: its symbol is also the pronoun.
SYMBOLS = {
    "hydrogen": "H", "helium": "He", "carbon": "C", "nitrogen": "N", "oxygen": "O", "sodium": "Na",
    "magnesium": "Mg", "aluminium": "Al", "silicon": "Si", "phosphorus": "P", "sulfur": "S",
    "chlorine": "Cl", "potassium": "K", "calcium": "Ca", "iron": "Fe", "copper": "Cu", "zinc": "Zn",
    "silver": "Ag", "tin": "Sn", "gold": "Au", "mercury": "Hg", "lead": "Pb", "uranium": "U",
    "neon": "Ne", "argon": "Ar", "nickel": "Ni",
}  # fmt: skip

ELEMENTS_BY_SYMBOL = {
    "Fe": "iron", "Au": "gold", "Ag": "silver", "Pb": "lead", "Na": "sodium", "K": "potassium",
    "Hg": "mercury", "Cu": "copper", "Sn": "tin", "W": "tungsten",
}  # fmt: skip

FACTS = [
    ("How many legs does a spider have?", "8|eight"),
    ("How many legs does an insect have?", "6|six"),
    ("How many days are in a week?", "7|seven"),
    ("How many months are in a year?", "12|twelve"),
    ("How many hours are in a day?", "24|twenty-four|twenty four"),
    ("How many minutes are in an hour?", "60|sixty"),
    ("How many sides does a triangle have?", "3|three"),
    ("How many sides does a hexagon have?", "6|six"),
    ("How many players does a soccer team have on the field?", "11|eleven"),
    ("How many strings does a standard guitar have?", "6|six"),
    ("How many bones are in the adult human body?", "206"),
    ("What is the smallest prime number?", "2|two"),
    ("What is the square root of 81?", "9|nine"),
    ("Which planet is known as the Red Planet?", "mars"),
    ("What is the largest planet in our solar system?", "jupiter"),
    ("Which planet is closest to the Sun?", "mercury"),
    ("Which planet is famous for its large, bright rings?", "saturn"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("What is the tallest mountain in the world?", "everest"),
    ("What is the largest country in the world by area?", "russia"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("Who painted the Mona Lisa?", "leonardo|da vinci"),
    ("Who developed the theory of relativity?", "einstein"),
    ("Who was the first president of the United States?", "washington"),
    ("Who discovered penicillin?", "fleming"),
    ("In what year did World War II end?", "1945"),
    ("In what year did humans first land on the Moon?", "1969"),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100|one hundred"),
    ("At what temperature in degrees Celsius does water freeze?", "0|zero"),
    ("Which gas do plants take in from the air for photosynthesis?", "carbon dioxide|co2"),
    ("What is the chemical formula of water?", "h2o"),
    ("What is the hardest natural substance?", "diamond|diamonds"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("What is the fastest land animal?", "cheetah|cheetahs"),
    ("What is the largest mammal?", "blue whale|blue whales"),
    ("Which animal is known as the king of the jungle?", "lion|lions"),
    ("Which organ pumps blood through the body?", "heart"),
    ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"),
    ("What is the main ingredient of guacamole?", "avocado|avocados"),
    ("What is the opposite of hot?", "cold"),
    ("What is the plural of mouse?", "mice"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What language is mainly spoken in Brazil?", "portuguese"),
    ("What language is mainly spoken in Mexico?", "spanish"),
    ("What is the currency of Japan?", "yen"),
    ("In which country are the pyramids of Giza?", "egypt"),
]


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _word_check(accepted: str, case_sensitive: bool = False) -> Callable[[str], bool]:
    # Right = one accepted answer appears as a whole word (accents folded; case-insensitive
    # except for chemical symbols, where "Co" and "CO" differ).
    alternatives = "|".join(re.escape(a) for a in accepted.split("|"))
    pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", 0 if case_sensitive else re.I)
    return lambda answer: bool(pattern.search(_fold(answer) if not case_sensitive else answer))


def factual() -> list[Item]:
    items = []
    suffix = " Answer in a few words."

    def add(level: str, key: str, prompt: str, accepted: str, case_sensitive: bool = False) -> None:
        items.append(
            Item(
                id=f"{level}-{re.sub(r'[^a-z0-9]+', '-', key.lower()).strip('-')}",
                category="factual",
                level=level,
                prompt=prompt + suffix,
                max_tokens=32,
                check=_word_check(_fold(accepted) if not case_sensitive else accepted, case_sensitive),
            )
        )

    for country, capital in CAPITALS.items():
        add("capital", country, f"What is the capital of {country}?", capital)
    for element, symbol in SYMBOLS.items():
        add("symbol", element, f"What is the chemical symbol for {element}?", symbol, case_sensitive=True)
    for symbol, element in ELEMENTS_BY_SYMBOL.items():
        add("element", symbol, f"Which chemical element has the symbol {symbol}?", element)
    for question, accepted in FACTS:
        add("fact", question, question, accepted)
    return items


# ---- JSON ---------------------------------------------------------------------------------------

_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "number": ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "strings": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
}

_SUBJECTS: dict[str, list[tuple[str, str]]] = {
    "a fictional person": [("name", "string"), ("age", "integer"), ("city", "string"), ("is_student", "boolean"), ("hobbies", "strings"), ("height_m", "number")],
    "a book": [("title", "string"), ("author", "string"), ("year", "integer"), ("pages", "integer"), ("genres", "strings"), ("in_print", "boolean")],
    "a product in a shop": [("name", "string"), ("price", "number"), ("in_stock", "boolean"), ("quantity", "integer"), ("tags", "strings"), ("brand", "string")],
    "a city": [("name", "string"), ("country", "string"), ("population", "integer"), ("is_capital", "boolean"), ("area_km2", "number"), ("landmarks", "strings")],
    "a pet": [("name", "string"), ("species", "string"), ("age", "integer"), ("vaccinated", "boolean"), ("weight_kg", "number"), ("toys", "strings")],
    "a movie": [("title", "string"), ("director", "string"), ("year", "integer"), ("rating", "number"), ("cast", "strings"), ("is_sequel", "boolean")],
}  # fmt: skip

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S | re.I)


def parse_json_answer(answer: str) -> Any:
    """The answer as JSON: the whole reply, or the inside of one ``` fence around all of it."""
    text = answer.strip()
    m = _FENCE.match(text)
    return json.loads(m.group(1) if m else text)


def _json_check(keys: list[tuple[str, str]]) -> Callable[[str], bool]:
    # Right = the reply parses as a JSON object having every asked key with the asked type.
    def check(answer: str) -> bool:
        try:
            obj = parse_json_answer(answer)
        except ValueError:
            return False
        return isinstance(obj, dict) and all(k in obj and _TYPES[t][1](obj[k]) for k, t in keys)

    return check


def json_tasks(rng: random.Random, n: int = 60) -> list[Item]:
    items = []
    subjects = list(_SUBJECTS)
    for i in range(n):
        subject = subjects[i % len(subjects)]
        keys = rng.sample(_SUBJECTS[subject], 1 + i % 4)  # 1 to 4 keys
        spec = ", ".join(f'"{k}" ({_TYPES[t][0]})' for k, t in keys)
        prompt = f"Return a JSON object describing {subject} with these keys: {spec}. Reply with only the JSON."
        for category, json_mode in (("json", False), ("json_grammar", True)):
            items.append(
                Item(
                    id=f"{category}-{i}",
                    category=category,
                    level=f"keys{len(keys)}",
                    prompt=prompt,
                    max_tokens=128,
                    check=_json_check(keys),
                    json_mode=json_mode,
                )
            )
    return items


def labelled_set() -> list[Item]:
    rng = random.Random(SEED)
    return arithmetic(rng) + factual() + json_tasks(rng)


if __name__ == "__main__":
    items = labelled_set()
    print(len(items), "items;", dict(Counter(i.category for i in items)), dict(Counter(i.level for i in items)))
    for it in items[::37]:
        print(f"  {it.id}: {it.prompt!r} (max_tokens {it.max_tokens}{', json mode' if it.json_mode else ''})")
