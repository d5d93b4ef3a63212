"""Each lesson's class question and its teacher notes: plain data, one place, so that the lesson page, the
teacher's class page and the students' phones all show the same question (a lesson is named by its prefix)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    text: str
    options: tuple[str, ...]
    answer: int  # index into options
    explanation: str


@dataclass(frozen=True)
class Notes:
    ask: str  # what to ask the class
    usual: str  # what students usually answer, and the misconception behind it
    minutes: int  # about how long the lesson takes in class


QUESTIONS: dict[str, Question] = {
    "l1": Question(
        "With all biases at 0, you double every router weight. What happens to the top-1 regions?",
        ("The expert with the longest arrow grows", "Nothing: the regions stay the same", "The regions rotate"),
        1,
        "Doubling every logit keeps their order (sigmoid and softmax are monotone), so every point keeps its "
        "winner. The scores get sharper, which matters for the gate weights, not for the choice.",
    ),
    "l2": Question(
        "Sigmoid scores, top-2. You raise the bias of one of the two chosen experts. What happens to its gate weight?",
        ("It goes up", "It stays the same", "It goes down"),
        1,
        "The bias is only used to choose experts. Gate weights come from the unbiased scores, so as long as the "
        "choice does not change, the gate weights do not move either (DeepSeek-V3).",
    ),
    "l3": Question(
        "With u = 1e-2, what does MaxVio do once it first gets low?",
        ("It stays near 0", "It keeps bouncing up and down", "It climbs back to where it started"),
        1,
        "Every step moves every bias by a full ±u. With u = 1e-2 that step is larger than the gap between "
        "balanced and unbalanced for many tokens, so the loads overshoot and swing back and forth. u = 1e-3 "
        "takes small enough steps to settle; u = 1e-4 would settle too, but takes ten times longer.",
    ),
    "l4": Question(
        "Which method reaches a low MaxVio without changing any token's router scores?",
        ("The Switch aux loss with a large α", "The bias rule", "Neither: balance always changes the scores"),
        1,
        "The bias only enters the top-k choice; weights and scores stay as the language-model loss wants them. "
        "The aux loss balances by bending the router weights themselves, and a large α fights the real objective "
        "(here it even overshoots at α = 3).",
    ),
    "l5": Question(
        "An expert is wanted by more tokens than its capacity. Which of them are dropped?",
        ("A random subset", "The ones with the lowest gate weight", "The ones that come last in the batch"),
        2,
        "Tokens are served in position order, so the first `capacity` tokens fill the expert and the later ones "
        "are dropped — a token's fate depends on where it sits in the batch, not on how much it wanted the expert.",
    ),
    "l6": Question(
        "In the real model, is the bias used to compute the gate weights?",
        ("Yes, the gates come from score + bias", "No, only to choose the experts"),
        1,
        "Same as the toy: DeepSeek-V3 adds the bias only for the top-k choice; the Token routing page flags the "
        "tokens whose choice the bias changed.",
    ),
}

NOTES: dict[str, Notes] = {
    "l1": Notes(
        "Point at one region: which expert gets a token here, and why? Then drag one arrow: which borders move?",
        "Most say the longest arrow 'wins more space'; with zero biases only the directions matter, so doubling "
        "every weight changes nothing. Some expect the borders to be curved.",
        10,
    ),
    "l2": Notes(
        "Follow one token through the four panels: which step decides the experts, which one decides the mix?",
        "Many think the bias also scales the gate weight. Raise a chosen expert's bias: its gate stays put until "
        "the choice flips (the warning appears).",
        10,
    ),
    "l3": Notes(
        "Press Play at u = 1e-3: which expert's bias goes down first, and why? Then compare the three rates.",
        "Students expect a larger rate to be simply faster; at 1e-2 it overshoots and MaxVio keeps bouncing.",
        12,
    ),
    "l4": Notes(
        "Raise α step by step: what does balance cost? Watch 'top-1 changed' and the router's arrows.",
        "The usual answer is 'both methods are the same'; the aux loss bends the weights (and the scores every "
        "gate uses), the bias rule does not.",
        10,
    ),
    "l5": Notes(
        "Lower C until tokens drop: which ones go first? Would reordering the batch change who is dropped?",
        "Most guess the tokens with the lowest gate weight; it is the latest positions.",
        8,
    ),
    "l6": Notes(
        "Open Token routing from here: find a token whose choice the bias flipped. Which layer balances worst?",
        "Students often expect the real model to be perfectly balanced; the heatmap and MaxVio_batch show how "
        "far each layer still is from uniform on its last logged batch.",
        10,
    ),
}
