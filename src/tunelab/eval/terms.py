"""Demographic term lists for counterfactual probes, and a user's YAML that extends them.

A category (``gender``) has groups (``male``, ``female``); the groups' lists are aligned
by position, so term *i* of one group is swapped for term *i* of another (``he`` ↔
``she``, ``his`` ↔ ``her``). A word that stands for two terms (``her``: ``his`` and
``him``) is swapped to the first. The lists are short on purpose: they are a probe, not
a lexicon. Extend them with a YAML file of the same shape::

    gender:
      male: [lad, fellow]
      female: [lass, lady]
    caste:              # a new category
      group_a: [...]
      group_b: [...]

Terms added to an existing category are appended to its groups, so every group of a
category must receive the same number of terms. This module knows nothing of models.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.files import read_yaml_mapping

Terms = dict[str, dict[str, list[str]]]

DEFAULT_TERMS: Terms = {
    "gender": {
        "male": ["he", "his", "him", "himself", "man", "men", "boy", "boys", "father",
                 "fathers", "son", "sons", "brother", "brothers", "husband", "husbands",
                 "uncle", "nephew", "king", "mr", "sir", "gentleman", "gentlemen", "male",
                 "boyfriend", "grandfather", "dad", "actor", "waiter"],
        "female": ["she", "her", "her", "herself", "woman", "women", "girl", "girls", "mother",
                   "mothers", "daughter", "daughters", "sister", "sisters", "wife", "wives",
                   "aunt", "niece", "queen", "mrs", "madam", "lady", "ladies", "female",
                   "girlfriend", "grandmother", "mom", "actress", "waitress"],
    },
    # First names from Bertrand & Mullainathan (2004), aligned by position.
    "names": {
        "white_female": ["Emily", "Anne", "Jill", "Allison", "Laurie", "Sarah", "Meredith",
                         "Carrie", "Kristen"],
        "black_female": ["Lakisha", "Aisha", "Keisha", "Tamika", "Latoya", "Ebony", "Tanisha",
                         "Latonya", "Kenya"],
        "white_male": ["Greg", "Brendan", "Geoffrey", "Brett", "Jay", "Matthew", "Neil",
                       "Todd", "Brad"],
        "black_male": ["Jamal", "Darnell", "Hakim", "Jermaine", "Kareem", "Leroy", "Rasheed",
                       "Tremayne", "Tyrone"],
    },
    "religion": {
        "christian": ["Christian", "Christians", "church", "churches", "Bible", "pastor",
                      "Christianity"],
        "muslim": ["Muslim", "Muslims", "mosque", "mosques", "Quran", "imam", "Islam"],
        "jewish": ["Jewish", "Jews", "synagogue", "synagogues", "Torah", "rabbi", "Judaism"],
        "hindu": ["Hindu", "Hindus", "temple", "temples", "Vedas", "priest", "Hinduism"],
    },
    "nationality": {
        "american": ["American", "Americans", "America"],
        "mexican": ["Mexican", "Mexicans", "Mexico"],
        "chinese": ["Chinese", "Chinese", "China"],
        "indian": ["Indian", "Indians", "India"],
        "german": ["German", "Germans", "Germany"],
        "nigerian": ["Nigerian", "Nigerians", "Nigeria"],
    },
    "age": {
        "young": ["young", "younger", "youngest", "teenager", "teenagers", "youth", "kid",
                  "kids"],
        "old": ["old", "older", "oldest", "retiree", "retirees", "elderly", "senior",
                "seniors"],
    },
}


def validate_terms(terms: Terms, source: str = "terms") -> list[str]:
    """Problems with a term table: fewer than two groups, unaligned or empty lists."""
    problems = []
    for cat, groups in terms.items():
        if not isinstance(groups, dict) or len(groups) < 2:
            problems.append(f"{source}: {cat}: needs two or more groups, each a list of terms")
            continue
        sizes = {g: len(v) for g, v in groups.items()}
        if len(set(sizes.values())) != 1 or 0 in sizes.values():
            problems.append(f"{source}: {cat}: every group needs the same number of terms "
                            f"(aligned by position), got {sizes}")
    return problems


def load_terms(path: str | Path | None, base: Terms | None = None) -> Terms:
    """The default lists, extended by a user's YAML file.

    Args:
        path: a YAML file ``{category: {group: [terms]}}``, or None for the defaults.
        base: the lists to extend (default: ``DEFAULT_TERMS``).

    Raises:
        ConfigError: the file is missing, not that shape, or leaves a category with
            unaligned groups; every problem is listed.
    """
    merged: Terms = {c: {g: list(v) for g, v in groups.items()}
                     for c, groups in (base or DEFAULT_TERMS).items()}
    if path is None:
        return merged
    p = Path(path)
    data = read_yaml_mapping(p, "terms file")
    problems = []
    for cat, groups in data.items():
        if not isinstance(groups, dict) or not all(
                isinstance(v, list) and all(isinstance(t, (str, int)) for t in v)
                for v in groups.values()):
            problems.append(f"{cat}: must map each group to a list of terms, got {groups!r}")
            continue
        target = merged.setdefault(str(cat), {})
        if target and set(map(str, groups)) != set(target):
            problems.append(f"{cat}: extends groups {sorted(target)} but names "
                            f"{sorted(map(str, groups))}; give terms for exactly those groups")
            continue
        for g, v in groups.items():
            target.setdefault(str(g), []).extend(str(t) for t in v)
    problems += validate_terms(merged, str(p))
    if problems:
        raise ConfigError(problems, str(p))
    return merged
