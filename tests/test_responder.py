"""The offline assistant's answers: every intent, arithmetic, recall from the conversation."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from server.realtime.responder import SORRY, Intent, Responder, grammar_sums, normalize, parse_sum

FIXED = datetime(2024, 3, 5, 15, 7, tzinfo=timezone.utc)  # a Tuesday afternoon


@pytest.fixture
def responder() -> Responder:
    return Responder(clock=lambda: FIXED, name="Sandra")


@pytest.mark.parametrize(
    ("when", "spoken"),
    [
        (datetime(2024, 3, 5, 15, 7), "It is 3 oh 7 PM."),
        (datetime(2024, 3, 5, 9, 45), "It is 9:45 AM."),
        (datetime(2024, 3, 5, 0, 0), "It is 12 AM."),
        (datetime(2024, 3, 5, 12, 30), "It is 12:30 PM."),
    ],
)
def test_time_is_read_from_the_clock(when: datetime, spoken: str) -> None:
    assert Responder(clock=lambda: when).answer("what time is it", []) == spoken


def test_date_and_day(responder: Responder) -> None:
    assert responder.answer("what is the date", []) == "Today is Tuesday, March 5, 2024."
    assert responder.answer("What day is it?", []) == "Today is Tuesday, March 5, 2024."


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        ("hello", "Hello! How can I help you?"),
        ("hi sandra", "Hello! How can I help you?"),
        ("good morning", "Good morning! How can I help you?"),
        ("Good evening!", "Good evening! How can I help you?"),
        ("thank you", "You're welcome."),
        ("thanks a lot", "You're welcome."),
        ("goodbye", "Goodbye! Talk to you soon."),
        ("see you later", "Goodbye! Talk to you soon."),
        ("what is three plus four", "Three plus four is 7."),
        ("what's six times seven", "Six times seven is 42."),
        ("what is nine minus two", "Nine minus two is 7."),
        ("ten divided by two", "Ten divided by two is 5."),
        ("what is seven divided by two", "Seven divided by two is 3.5."),
        ("what is two minus nine", "Two minus nine is -7."),
        ("what is twenty times twenty", "Twenty times twenty is 400."),
        ("what is 4 plus 5", "Four plus five is 9."),
        ("what is five divided by zero", "You cannot divide by zero."),
    ],
)
def test_fixed_answers_and_arithmetic(responder: Responder, heard: str, expected: str) -> None:
    assert responder.answer(heard, []) == expected


def test_name_and_abilities_use_the_configured_name() -> None:
    nova = Responder(name="Nova")
    assert nova.answer("what is your name", []).startswith("My name is Nova.")
    assert "hello nova" in nova.phrases and "hello sandra" not in nova.phrases
    assert "arithmetic" in nova.answer("what can you do", [])
    assert nova.answer("help", []) == nova.answer("what can you do", [])


def test_arithmetic_beyond_small_numbers_is_not_understood(responder: Responder) -> None:
    assert parse_sum("what is twenty one plus two") is None
    assert responder.answer("what is 21 plus 2", []) == SORRY
    assert responder.answer("what is apple plus two", []) == SORRY


def test_recall_uses_reseeded_items_and_skips_the_question_itself(responder: Responder) -> None:
    conversation = [
        {"role": "system", "content": "You are Sandra."},
        # Re-seeded by a client after a reconnect (conversation.item.create).
        {"role": "user", "content": "Remind me to buy milk"},
        {"role": "assistant", "content": "Sorry, I did not catch that."},
        {"role": "user", "content": "what did i say before"},
    ]
    assert responder.answer("what did I say before", conversation) == "You said: Remind me to buy milk."


def test_recall_when_the_question_is_not_in_the_conversation_yet(responder: Responder) -> None:
    conversation = [
        {"role": "user", "content": "what time is it"},
        {"role": "assistant", "content": "It is 3 oh 7 PM."},
    ]
    assert responder.answer("what was my last question", conversation) == "You said: what time is it."


def test_recall_of_an_earlier_identical_question_that_was_answered(responder: Responder) -> None:
    conversation = [
        {"role": "user", "content": "hello"},
        {"role": "user", "content": "what did i say before"},
        {"role": "assistant", "content": "You said: hello."},
    ]
    assert responder.answer("what did i say before", conversation) == "You said: what did i say before."


def test_recall_with_nothing_said_before(responder: Responder) -> None:
    only_this = [{"role": "system", "content": "x"}, {"role": "user", "content": "what did i say"}]
    assert responder.answer("what did i say", only_this) == "You have not said anything before this."
    assert responder.answer("what did i say", []) == "You have not said anything before this."


@pytest.mark.parametrize("heard", [None, "", "   ", "the weather in paris", "what is the capital of france"])
def test_unknown_or_nothing_gets_a_short_apology(responder: Responder, heard: str | None) -> None:
    assert responder.answer(heard, []) == SORRY


def test_every_grammar_phrase_is_answered_and_normalized(responder: Responder) -> None:
    assert len(responder.phrases) == len(set(responder.phrases))
    assert 100 < len(responder.phrases) < 500  # modest: recognition accuracy falls as it grows
    for phrase in responder.phrases:
        assert phrase == normalize(phrase)
        assert responder.intent_of(phrase) is not None, phrase
        answer = responder.answer(phrase, [])
        assert answer and answer != SORRY, phrase


def test_every_intent_is_in_the_grammar(responder: Responder) -> None:
    assert {responder.intent_of(p) for p in responder.phrases} == set(Intent)


def test_grammar_arithmetic_has_no_negative_results_or_fractions() -> None:
    sums = grammar_sums()
    assert all(not s.spoken_answer().split(" is ")[-1].startswith("-") for s in sums)
    assert all("." not in s.spoken_answer().split(" is ")[-1][:-1] for s in sums)
    assert len(sums) == 121 + 66 + 121 + 37  # plus, minus (a ≥ b), times, exact divisions
