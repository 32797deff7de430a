"""The paper this library implements, in the form TRL's trainers put it in model cards (``_paper``)."""

from __future__ import annotations

__all__ = ["ZIEGLER_2019"]

ZIEGLER_2019: dict[str, str] = {
    "title": "Fine-Tuning Language Models from Human Preferences",
    "id": "1909.08593",
    "citation": (
        "@article{ziegler2019finetuning,\n"
        "    title        = {{Fine-Tuning Language Models from Human Preferences}},\n"
        "    author       = {Daniel M. Ziegler and Nisan Stiennon and Jeffrey Wu and Tom B. Brown and Alec Radford "
        "and Dario Amodei and Paul F. Christiano and Geoffrey Irving},\n"
        "    year         = 2019,\n"
        "    eprint       = {arXiv:1909.08593}\n"
        "}"
    ),
}
