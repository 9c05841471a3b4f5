"""The offline assistant's mind: a small, honest set of intents answered from text.

An answer has a written form, for the transcript, and a spoken form, for the synthesizer:
they differ where espeak would read the written one badly ("2:08" is said "2 oh 8").
Pure: no I/O. The recognizer's grammar is generated from the same intent tables
(``Responder.phrases``), so the ear can never hear a phrase the mind cannot answer.

When the session declares a function tool this mind knows (get_time, calculate,
set_timer), the matching question becomes a ToolRequest instead of an answer, and the
answer is later built from the tool's output (answer_tool_output).
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

log = logging.getLogger(__name__)

SORRY = "Sorry, I did not catch that."

NUMBER_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)
_NUMBER_VALUES = {word: value for value, word in enumerate(NUMBER_WORDS)}
_TENS_WORDS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

# The grammar only offers operands up to ten: every extra phrase costs recognition accuracy.
GRAMMAR_MAX_OPERAND = 10
# Timers the grammar offers: one to sixty seconds or minutes.
GRAMMAR_MAX_TIMER_COUNT = 60

# The function tools this mind knows how to call (core/tools/builtin.py has the same names).
GET_TIME = "get_time"
CALCULATE = "calculate"
SET_TIMER = "set_timer"
KNOWN_TOOLS = frozenset({GET_TIME, CALCULATE, SET_TIMER})
TIMER_LABEL = "timer"
# A tool's error is said aloud: only its first sentence, and not a paragraph of it.
MAX_SPOKEN_ERROR_CHARS = 100


class Operator(enum.Enum):
    PLUS = "plus"
    MINUS = "minus"
    TIMES = "times"
    DIVIDED_BY = "divided by"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {Operator.PLUS: "+", Operator.MINUS: "-", Operator.TIMES: "*", Operator.DIVIDED_BY: "/"}


class Intent(enum.Enum):
    TIME = "time"
    DATE = "date"
    GREETING = "greeting"
    NAME = "name"
    ABILITIES = "abilities"
    THANKS = "thanks"
    GOODBYE = "goodbye"
    RECALL = "recall"
    ARITHMETIC = "arithmetic"
    TIMER = "timer"


# Fixed phrasings per intent; {name} is the assistant's name, lowercased.
_FIXED_PHRASES: dict[Intent, tuple[str, ...]] = {
    Intent.TIME: ("what time is it", "what is the time", "what's the time", "tell me the time"),
    Intent.DATE: ("what is the date", "what's the date", "what is today's date", "what day is it",
                  "what day is today", "tell me the date"),
    Intent.GREETING: ("hello", "hi", "hey", "good morning", "good afternoon", "good evening",
                      "hello {name}", "hi {name}", "hey {name}"),
    Intent.NAME: ("what is your name", "what's your name", "who are you"),
    Intent.ABILITIES: ("what can you do", "help", "help me"),
    Intent.THANKS: ("thank you", "thanks", "thank you very much", "thanks a lot"),
    Intent.GOODBYE: ("goodbye", "bye", "bye bye", "good night", "see you later"),
    Intent.RECALL: ("what did i say before", "what did i say", "what did i just say",
                    "what was my last question"),
}

_ARITHMETIC = re.compile(
    r"^(?:what is |what's |how much is )?(?P<a>\w+) (?P<op>plus|minus|times|divided by) (?P<b>\w+)$"
)
_TIMER = re.compile(r"^set a timer for (?P<count>\w+(?: \w+)?) (?P<unit>second|minute)s?$")


@dataclass(frozen=True)
class Answer:
    """One answer: `text` is shown in the conversation, `spoken` is what is said aloud."""

    text: str
    spoken: str

    @classmethod
    def plain(cls, text: str) -> Answer:
        """An answer that reads aloud as it is written."""
        return cls(text, text)


@dataclass(frozen=True)
class Sum:
    """One arithmetic question: a OP b."""

    a: int
    op: Operator
    b: int

    def phrase(self) -> str:
        return f"what is {NUMBER_WORDS[self.a]} {self.op.value} {NUMBER_WORDS[self.b]}"

    def spoken_answer(self) -> str:
        question = f"{NUMBER_WORDS[self.a].capitalize()} {self.op.value} {NUMBER_WORDS[self.b]}"
        if self.op is Operator.DIVIDED_BY and self.b == 0:
            return "You cannot divide by zero."
        return f"{question} is {_format_number(self._value())}."

    def _value(self) -> Fraction:
        a, b = Fraction(self.a), Fraction(self.b)
        if self.op is Operator.PLUS:
            return a + b
        if self.op is Operator.MINUS:
            return a - b
        if self.op is Operator.TIMES:
            return a * b
        return a / b


def number_words(n: int) -> str:
    """0..99 in words ("twenty one"); larger numbers as digits."""
    if n < len(NUMBER_WORDS):
        return NUMBER_WORDS[n]
    if n >= 100:
        return str(n)
    tens, unit = divmod(n, 10)
    return _TENS_WORDS[tens] if unit == 0 else f"{_TENS_WORDS[tens]} {NUMBER_WORDS[unit]}"


def _counted(n: int, unit: str) -> str:
    return f"{number_words(n)} {unit}" + ("" if n == 1 else "s")


def duration_words(seconds: float) -> str:
    """A duration as said aloud: 120 → "two minutes", 90 → "one minute and thirty seconds"."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [_counted(n, unit) for n, unit in ((hours, "hour"), (minutes, "minute"), (secs, "second")) if n]
    return " and ".join(parts) or "zero seconds"


def timer_phrases() -> tuple[str, ...]:
    """The timers the grammar offers: "set a timer for one second" .. "... for sixty minutes"."""
    return tuple(f"set a timer for {_counted(n, unit)}" for unit in ("second", "minute")
                 for n in range(1, GRAMMAR_MAX_TIMER_COUNT + 1))


_TIMER_COUNTS = {number_words(n): n for n in range(1, GRAMMAR_MAX_TIMER_COUNT + 1)}


def parse_timer(text: str) -> int | None:
    """The seconds of "set a timer for two minutes" / "... for 30 seconds" (normalized text)."""
    match = _TIMER.match(text)
    if match is None:
        return None
    count = int(match["count"]) if match["count"].isdigit() else _TIMER_COUNTS.get(match["count"])
    if not count:
        return None
    return count * (60 if match["unit"] == "minute" else 1)


def _format_number(value: Fraction) -> str:
    # Digits: espeak reads "42", "-7" and "3.5" naturally, and transcripts stay short.
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def grammar_sums() -> tuple[Sum, ...]:
    """The arithmetic the grammar offers: results never negative, divisions always exact."""
    sums: list[Sum] = []
    operands = range(GRAMMAR_MAX_OPERAND + 1)
    for op in Operator:
        for a in operands:
            for b in operands:
                if op is Operator.MINUS and b > a:
                    continue
                if op is Operator.DIVIDED_BY and (b == 0 or a % b):
                    continue
                sums.append(Sum(a, op, b))
    return tuple(sums)


def normalize(text: str) -> str:
    """Lowercase words separated by single spaces; apostrophes kept ("what's")."""
    text = text.lower().replace("\u2019", "'")
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text).split())


def _parse_number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return _NUMBER_VALUES.get(word)


def parse_sum(text: str) -> Sum | None:
    """A Sum for "what is three plus four" / "what's 6 times 7" / "ten divided by two"."""
    match = _ARITHMETIC.match(text)
    if match is None:
        return None
    a, b = _parse_number(match["a"]), _parse_number(match["b"])
    if a is None or b is None:
        return None
    return Sum(a, Operator(match["op"]), b) if a <= 20 and b <= 20 else None


@dataclass(frozen=True)
class ToolRequest:
    """A function call this mind makes instead of answering: a tool name and its arguments."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def arguments_json(self) -> str:
        return json.dumps(dict(self.arguments))


def time_answer(now: datetime) -> Answer:
    """The time as "It is 2:08 PM.", with a spoken form espeak reads well."""
    hour = now.hour % 12 or 12
    half = "AM" if now.hour < 12 else "PM"
    written = f"It is {hour}:{now.minute:02d} {half}."
    # espeak reads "3:05" as "three zero five": say "oh" the way people do, and nothing for ":00".
    if now.minute == 0:
        return Answer(written, f"It is {hour} {half}.")
    if now.minute < 10:
        return Answer(written, f"It is {hour} oh {now.minute} {half}.")
    return Answer.plain(written)


def _short_error(message: str) -> str:
    first = message.strip().split(". ")[0].strip().rstrip(".")
    if len(first) > MAX_SPOKEN_ERROR_CHARS:
        first = first[:MAX_SPOKEN_ERROR_CHARS].rsplit(" ", 1)[0] + "..."
    return first or "no reason given"


def _spoken_expression(expression: str) -> str:
    # espeak says "3 + 4" as "3 4" at best: name the operators.
    words = {symbol: f" {op.value} " for op, symbol in _SYMBOLS.items()}
    return " ".join("".join(words.get(c, c) for c in expression).split())


def _output_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return _format_number(Fraction(value).limit_denominator(10**6))


def answer_tool_output(request: ToolRequest | None, output: str) -> Answer:
    """What to say once a tool answered; `request` is None for a call this mind did not make.

    Outputs are the client's (core/tools/builtin.py): set_timer {"seconds", ...}, get_time
    {"local_time": ISO 8601, ...}, calculate {"expression", "result"}; any {"error": ...}
    is said as an apology. An output of an unknown shape is read out as it is.
    """
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        return Answer.plain(f"Sorry, that did not work: {_short_error(str(data['error']))}.")
    name = request.name if request is not None else None
    arguments = request.arguments if request is not None else {}
    if isinstance(data, dict) and name == SET_TIMER:
        seconds = data.get("seconds", arguments.get("seconds"))
        if _output_number(seconds) is not None:
            return Answer.plain(f"Your timer for {duration_words(seconds)} is set.")
    if isinstance(data, dict) and name == GET_TIME:
        for key in ("local_time", "time"):
            try:
                return time_answer(datetime.fromisoformat(str(data.get(key))))
            except ValueError:
                continue
    if isinstance(data, dict) and name == CALCULATE:
        result = _output_number(data.get("result"))
        expression = str(data.get("expression", arguments.get("expression", ""))).strip()
        if result is not None and expression:
            return Answer(f"{expression} is {result}.", f"{_spoken_expression(expression)} is {result}.")
    said = output.strip()
    if not said:
        return Answer.plain("Done.")
    return Answer.plain(_short_error(said) + ".")


def _local_now() -> datetime:
    return datetime.now().astimezone()


class Responder:
    """Answers one recognized utterance, given the conversation so far."""

    def __init__(self, clock: Callable[[], datetime] = _local_now, name: str = "Sandra") -> None:
        self._clock = clock
        self._name = name
        lowered = normalize(name)
        self._intents: dict[str, Intent] = {}
        for intent, templates in _FIXED_PHRASES.items():
            for template in templates:
                self._intents[template.format(name=lowered)] = intent
        self.phrases: tuple[str, ...] = (tuple(self._intents) + tuple(s.phrase() for s in grammar_sums())
                                         + timer_phrases())

    def intent_of(self, heard: str | None) -> Intent | None:
        """Which intent a text asks for, or None when it is not one this responder knows."""
        if not heard:
            return None
        text = normalize(heard)
        if text in self._intents:
            return self._intents[text]
        if parse_timer(text) is not None:
            return Intent.TIMER
        return Intent.ARITHMETIC if parse_sum(text) is not None else None

    def tool_request(self, heard: str | None, declared: Collection[str]) -> ToolRequest | None:
        """The function call that answers `heard`, when the session declared that tool; else None."""
        intent = self.intent_of(heard)
        if heard is None or intent is None:
            return None
        text = normalize(heard)
        request: ToolRequest | None = None
        if intent is Intent.TIME:
            request = ToolRequest(GET_TIME)
        elif intent is Intent.TIMER:
            request = ToolRequest(SET_TIMER, {"seconds": parse_timer(text), "label": TIMER_LABEL})
        elif intent is Intent.ARITHMETIC:
            the_sum = parse_sum(text)
            assert the_sum is not None  # intent_of() found it
            request = ToolRequest(CALCULATE, {"expression": f"{the_sum.a} {the_sum.op.symbol} {the_sum.b}"})
        return request if request is not None and request.name in declared else None

    def answer(self, heard: str | None, conversation: Sequence[Mapping[str, str]]) -> Answer:
        """The answer; never empty (unknown or nothing heard → a short apology)."""
        intent = self.intent_of(heard)
        if intent is Intent.TIME:
            return time_answer(self._clock())
        return Answer.plain(self._text_answer(intent, heard, conversation))

    def _text_answer(self, intent: Intent | None, heard: str | None, conversation: Sequence[Mapping[str, str]]) -> str:
        if intent is None or heard is None:
            return SORRY
        text = normalize(heard)
        if intent is Intent.DATE:
            today = self._clock()
            return today.strftime("Today is %A, %B ") + f"{today.day}, {today.year}."
        if intent is Intent.GREETING:
            opening = "Hello" if not text.startswith("good ") else " ".join(text.split()[:2]).capitalize()
            return f"{opening}! How can I help you?"
        if intent is Intent.NAME:
            return f"My name is {self._name}. I am your offline voice assistant."
        if intent is Intent.ABILITIES:
            return ("I can tell you the time and the date, do simple arithmetic like three plus four, "
                    "and remember what you said before.")
        if intent is Intent.THANKS:
            return "You're welcome."
        if intent is Intent.GOODBYE:
            return "Goodbye! Talk to you soon."
        if intent is Intent.RECALL:
            return self._recall(text, conversation)
        if intent is Intent.TIMER:
            return "I cannot set timers in this session: the app has not offered me its timer."
        the_sum = parse_sum(text)
        assert the_sum is not None  # intent_of() found it
        return the_sum.spoken_answer()

    @staticmethod
    def _recall(text: str, conversation: Sequence[Mapping[str, str]]) -> str:
        turns = [m for m in conversation if m.get("role") == "user" and str(m.get("content", "")).strip()]
        # The current question may already be the conversation's last item: skip it, not
        # an earlier identical question that was answered.
        if turns and turns[-1] is conversation[-1] and normalize(str(turns[-1]["content"])) == text:
            turns.pop()
        if not turns:
            return "You have not said anything before this."
        said = str(turns[-1]["content"]).strip()
        return f"You said: {said}" + ("" if said[-1] in ".?!" else ".")
