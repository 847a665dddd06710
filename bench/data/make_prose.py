#!/usr/bin/env python3
"""Writes generated-prose.txt: the default ds4-bench prompt.

The benchmark box cannot reach Project Gutenberg, so instead of a public-domain novel
this is machine-generated English-like prose (fixed seed, original sentence templates
and word lists written for ds4; no third-party text). It only needs to tokenize like
ordinary English: varied words, punctuation, paragraphs. Regenerate with
    python3 bench/data/make_prose.py > bench/data/generated-prose.txt
"""
import random

NAMES = ["Ada", "Bram", "Clara", "Dorian", "Edith", "Felix", "Greta", "Hugo", "Ines",
         "Jonas", "Kira", "Leon", "Mira", "Nils", "Olga", "Pavel", "Rosa", "Silas"]
PLACES = ["the harbour", "the old mill", "the orchard", "the station", "the library",
          "the market square", "the lighthouse", "the ferry landing", "the chapel",
          "the bakery on the hill", "the river bend", "the long meadow", "the inn"]
TIMES = ["At dawn", "Late that evening", "Before the rain came", "On the third morning",
         "When the bells had stopped", "Long after supper", "In the grey hour before noon",
         "As the tide turned", "By the time the lamps were lit", "Some weeks later"]
ADJ = ["quiet", "restless", "narrow", "golden", "crooked", "patient", "weathered",
       "bright", "hollow", "stubborn", "gentle", "distant", "careful", "sudden", "heavy"]
NOUNS = ["letter", "lantern", "key", "map", "coat", "basket", "window", "bridge", "clock",
         "garden", "staircase", "promise", "rumour", "song", "boat", "ledger", "storm"]
VERBS = ["carried", "found", "mended", "forgot", "watched", "opened", "hid", "followed",
         "counted", "painted", "answered", "sold", "borrowed", "remembered", "measured"]
FEEL = ["wondered whether", "was certain that", "could not believe that", "suspected that",
        "had always known that", "pretended that", "hoped, without saying so, that"]
SAYING = ["said", "whispered", "asked", "replied", "muttered", "called out", "admitted"]
LINES = ["We should have left an hour ago", "Nobody remembers the name of that ship",
         "The road is longer than it looks", "I kept the last page for you",
         "You can hear the sea from the top step", "It was never about the money",
         "Tomorrow we will count them again", "Leave the door open for the cat"]


def noun_phrase(r):
    return f"the {r.choice(ADJ)} {r.choice(NOUNS)}"


def sentence(r):
    a, b = r.sample(NAMES, 2)
    kind = r.randrange(6)
    if kind == 0:
        return f"{r.choice(TIMES)}, {a} {r.choice(VERBS)} {noun_phrase(r)} near {r.choice(PLACES)}."
    if kind == 1:
        return f"{a} {r.choice(FEEL)} {b} {r.choice(VERBS)} {noun_phrase(r)}."
    if kind == 2:
        return f"\"{r.choice(LINES)},\" {a} {r.choice(SAYING)}, and {b} said nothing for a while."
    if kind == 3:
        n = r.randrange(2, 60)
        return (f"There were {n} {r.choice(NOUNS)}s in {r.choice(PLACES)}, and every one of them "
                f"looked {r.choice(ADJ)} in the {r.choice(['morning', 'evening', 'winter', 'summer'])} light.")
    if kind == 4:
        return (f"{b} walked from {r.choice(PLACES)} to {r.choice(PLACES)} with {noun_phrase(r)} "
                f"under one arm; the way was {r.choice(ADJ)} and nobody stopped to ask why.")
    return f"It was {r.choice(ADJ)}, {b} thought, how {noun_phrase(r)} had changed everything."


def main():
    r = random.Random(20261126)
    print("GENERATED TEXT (not a real novel): English-like prose written by "
          "bench/data/make_prose.py for ds4-bench.\n")
    for chapter in range(1, 41):
        print(f"Chapter {chapter}\n")
        for _ in range(r.randrange(8, 14)):
            print(" ".join(sentence(r) for _ in range(r.randrange(3, 8))) + "\n")


main()
