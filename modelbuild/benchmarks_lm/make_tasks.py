"""Write the benchmark sets that ship with modelbuild (CC0): `python -m modelbuild.benchmarks_lm.make_tasks`.

Seeded, so the JSONL files in tasks/ are the output of this script and a reviewer can regenerate them
byte for byte. Two sets, each read by an lm-eval task YAML beside it:

- `mb_arith` (exact match, generate_until): arithmetic, unit conversions and short facts, one short answer;
- `mb_mc` (multiple choice, 4 choices, log-likelihood acc/acc_norm): the same kinds of knowledge;
- `mb_instruct` (instruction -> a one-sentence response, generate_until): ROUGE-L, BLEU and chrF.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 16
HERE = Path(__file__).parent / "tasks"

UNITS = [  # (from, to, factor): whole-number conversions only, so the answer is exact
    ("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("centimetres", "millimetres", 10),
    ("kilograms", "grams", 1000), ("litres", "millilitres", 1000), ("hours", "minutes", 60),
    ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7), ("years", "months", 12),
]
FACTS = [  # (question, answer, three wrong answers)
    ("What is the capital of France?", "Paris", ["Lyon", "Madrid", "Berlin"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Paris", "Vienna"]),
    ("What is the capital of Japan?", "Tokyo", ["Osaka", "Seoul", "Beijing"]),
    ("What is the capital of Spain?", "Madrid", ["Barcelona", "Lisbon", "Rome"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Vienna", "Paris"]),
    ("What is the capital of Egypt?", "Cairo", ["Alexandria", "Tunis", "Nairobi"]),
    ("What is the capital of Canada?", "Ottawa", ["Toronto", "Montreal", "Vancouver"]),
    ("What is the capital of Australia?", "Canberra", ["Sydney", "Melbourne", "Perth"]),
    ("What is the capital of Kenya?", "Nairobi", ["Mombasa", "Cairo", "Lagos"]),
    ("What is the capital of Norway?", "Oslo", ["Bergen", "Stockholm", "Helsinki"]),
    ("How many days are in a week?", "7", ["5", "6", "10"]),
    ("How many months are in a year?", "12", ["10", "11", "13"]),
    ("How many legs does a spider have?", "8", ["6", "4", "10"]),
    ("How many sides does a triangle have?", "3", ["4", "5", "6"]),
    ("How many sides does a hexagon have?", "6", ["5", "7", "8"]),
    ("What colour is the sky on a clear day?", "blue", ["green", "red", "yellow"]),
    ("What colour is grass?", "green", ["blue", "purple", "white"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Earth"]),
    ("Which planet is the largest?", "Jupiter", ["Saturn", "Earth", "Mars"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("What gas do plants take in from the air?", "carbon dioxide", ["oxygen", "helium", "neon"]),
    ("What is the opposite of hot?", "cold", ["warm", "wet", "loud"]),
    ("What is the opposite of up?", "down", ["left", "over", "near"]),
    ("What is the plural of mouse?", "mice", ["mouses", "mooses", "meese"]),
    ("What is the plural of child?", "children", ["childs", "childes", "childer"]),
]


def arithmetic(rng: random.Random) -> tuple[str, str, list[str]]:
    a, b = rng.randint(2, 50), rng.randint(2, 50)
    op = rng.choice("+-*")
    if op == "-" and b > a:
        a, b = b, a
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    return f"What is {a} {word} {b}?", str(value), _near(rng, value)


def conversion(rng: random.Random) -> tuple[str, str, list[str]]:
    src, dst, factor = rng.choice(UNITS)
    n = rng.randint(2, 9)
    return f"How many {dst} are in {n} {src}?", str(n * factor), _near(rng, n * factor, factor)


def _near(rng: random.Random, value: int, step: int = 1) -> list[str]:
    """Three distinct wrong answers close to `value`."""
    wrong = set()
    while len(wrong) < 3:
        guess = value + rng.choice([-3, -2, -1, 1, 2, 3]) * step
        if guess != value and guess >= 0:
            wrong.add(guess)
    return [str(w) for w in sorted(wrong)]


def items(rng: random.Random, n: int) -> list[tuple[str, str, list[str]]]:
    """`n` distinct questions: every fact once, the rest two thirds arithmetic, one third conversions."""
    out, seen = list(FACTS), {q for q, _, _ in FACTS}
    while len(out) < n:
        q = rng.choice([arithmetic, arithmetic, conversion])(rng)
        if q[0] not in seen:
            seen.add(q[0])
            out.append(q)
    rng.shuffle(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def main() -> None:
    rng = random.Random(SEED)
    write_jsonl(HERE / "mb_arith.jsonl", [{"question": q, "answer": a} for q, a, _ in items(rng, 240)])
    mc = []
    for q, a, wrong in items(rng, 240):
        choices = [a, *wrong]
        rng.shuffle(choices)
        mc.append({"question": q, "choices": choices, "answer": a})
    write_jsonl(HERE / "mb_mc.jsonl", mc)
    write_jsonl(HERE / "mb_instruct.jsonl", [{"instruction": q, "response": sentence(q, a)}
                                             for q, a, _ in items(rng, 120)])


def sentence(question: str, answer: str) -> str:
    """The answer as one sentence, in the words of the question ("What is 6 times 4?" -> "6 times 4 is 24.")."""
    words = question.rstrip("?").split()
    if question.startswith("What is the ") and len(words) > 3:  # What is the capital of France?
        return f"The {' '.join(words[3:])} is {answer}."
    if question.startswith("What is "):  # What is 44 minus 2? / What is frozen water called?
        rest = " ".join(words[2:])
        return f"{rest[0].upper()}{rest[1:]} is {answer}." if not rest.endswith(" called") else \
            f"{rest[0].upper()}{rest[1:-7]} is called {answer}."
    if question.startswith("How many ") and " are in " in question:  # How many metres are in 3 kilometres?
        unit, _, amount = question[len("How many "):].rstrip("?").partition(" are in ")
        return f"There are {answer} {unit} in {amount}."
    return f"The answer is {answer}."


if __name__ == "__main__":
    main()
