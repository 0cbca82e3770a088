"""tinyllm.report's text checks: Harper's grammar lints and the whole-word cap (the W&B/TensorBoard readers are tested
beside the trainer's loggers in test_trainer_logging.py)."""
from tinyllm.report import GRAMMAR_KINDS, lint_texts, story_checks, vocabulary, whole_words


def test_lint_texts_counts_grammar_lints_per_kind_and_words():
    kinds, n_words, found = lint_texts(["The dogs was happy.", "She go to the park and play with he friend.",
                                        "Lily and Tom played in the garden."])
    assert n_words == 4 + 10 + 7
    assert sum(kinds[k] for k in GRAMMAR_KINDS) >= 2                     # "dogs was", "She go"
    assert all(0 <= i < 3 for i, _ in found) and not [lint for i, lint in found if i == 2]   # the correct sentence is clean
    assert {lint.problem_text for _, lint in found if lint.lint_kind == "Agreement"} & {"go", "was", "dogs was"}


def test_whole_words_never_cuts_a_word():
    assert whole_words("Once upon a ti", ended=False) == "Once upon a"
    assert whole_words("The end.", ended=True) == "The end."
    assert whole_words("word", ended=False) == ""


def test_story_checks_on_a_made_up_story():
    seen = vocabulary(["the cat sat on the mat"])
    c = story_checks("The cat sat. The cat sat. The zog", seen)
    assert c["ended sentences"] == 2 / 3 and c["new words"] == 1 / 8
