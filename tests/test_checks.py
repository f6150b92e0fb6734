"""The automatic checks on answers that must pass and answers that must fail.

The answers are written the way small instruct models answer the lab's prompts (intro and
closing lines, Markdown bold and headings, nested bullets). The code checks run the answers'
code in the real sandbox.
"""

import json
import time

import pytest

from core.evaluate.checks import (
    CHECK_TYPES,
    CheckSpecError,
    check_answer,
    count_items,
    extract_code,
    leakage_check,
    run_check,
    same_stem,
    section_items,
    validate_check,
)
from core.store.paths import DATA_DIR

LAB = {
    p["id"]: p for p in json.loads((DATA_DIR / "eval_prompts.json").read_text(encoding="utf-8"))["prompts"]
}


def results(prompt_id: str, answer: str) -> dict[str, tuple[bool, str]]:
    prompt = LAB[prompt_id]
    return {r.name: (r.passed, r.detail) for r in check_answer(prompt["checks"], answer, prompt["prompt"])}


def all_pass(prompt_id: str, answer: str) -> bool:
    found = results(prompt_id, answer)
    assert all(passed for passed, _ in found.values()), found
    return True


def failing(prompt_id: str, answer: str) -> dict[str, str]:
    return {name: detail for name, (passed, detail) in results(prompt_id, answer).items() if not passed}


VPN_GOOD = (
    "A VPN (Virtual Private Network) creates an encrypted tunnel between your device and a server run by the "
    "VPN provider. Your internet traffic travels through this tunnel, so anyone on the local network, such as "
    "your ISP or someone on public Wi-Fi, sees only scrambled data, and the websites you visit see the VPN "
    "server's IP address instead of yours."
)


def test_vpn_one_short_paragraph():
    assert all_pass("vpn", VPN_GOOD)
    assert set(failing("vpn", VPN_GOOD + "\n\nIn summary, a VPN keeps you private online.")) == {"paragraphs"}
    assert failing("vpn", "A VPN hides you.") == {
        "words": "4 words, wanted 20-150",
        "topic": "mentions 0 of 'encrypt', 'tunnel', 'server', 'ip address', 'private network', 'scrambl', "
        "'rout' (wanted 1)",
    }
    assert set(failing("vpn", " ".join([VPN_GOOD] * 3))) == {"words"}
    assert failing("vpn", "")["words"] == "0 words, wanted 20-150 (empty answer)"


ML_THREE = """Here are three key differences between supervised and unsupervised learning:

1. **Labeled data**: Supervised learning trains on labeled examples, while unsupervised learning works with
   unlabeled data.
   - Supervised: input-output pairs
   - Unsupervised: inputs only
2. **Goal**: Supervised learning predicts an output; unsupervised learning finds structure such as clusters.
3. **Evaluation**: Supervised models are scored against known answers; unsupervised results are harder to judge.

In short, the presence of labels is the main difference."""


def test_three_differences_count_top_level_items_only():
    assert all_pass("ml_differences", ML_THREE)
    four = ML_THREE.replace("In short", "4. **Algorithms**: regression versus k-means.\n\nIn short")
    assert failing("ml_differences", four) == {"items": "4 items, wanted exactly 3 (numbered items)"}
    assert failing("ml_differences", "Supervised learning uses labels.")["items"].startswith("0 items")


@pytest.mark.parametrize(
    "answer",
    [
        "Differences:\n- Labels: yes vs no\n- Goal: predict vs discover\n- Feedback: direct vs none\nHope this helps!",
        "Differences:\n* Labels\n* Goal\n* Feedback",
        "• Labels\n• Goal\n• Feedback",
        "1) Labels\n2) Goal\n3) Feedback",
        "### 1. Labels\nText.\n### 2. Goal\nText.\n### 3. Feedback\nText.",
        "**1. Labels** text\n**2. Goal** text\n**3. Feedback** text",
        "| Aspect | Supervised | Unsupervised |\n|---|---|---|\n| Labels | yes | no |\n| Goal | predict | discover |\n"
        "| Feedback | direct | none |",
        "First, supervised learning uses labels. Second, it predicts outputs. Third, it gets direct feedback.",
    ],
)
def test_list_styles_are_counted(answer):
    assert count_items(answer)[0] == 3, count_items(answer)


@pytest.mark.parametrize(
    ("answer", "count"),
    [
        # three points, then a numbered list of sources: numbered items no longer win
        (
            "Ada was a mathematician.\n\n- Point one.\n- Point two.\n- Point three.\n\nSources:\n1. Wikipedia\n"
            "2. Britannica",
            3,
        ),
        ("Here are three differences:\n\n1. Labels.\n2. Goal.\n3. Evaluation.\n\nNote:\n1. Both are ML.", 3),
        (
            "Key points:\n\n1. First algorithm.\n2. Byron's daughter.\n3. Music.\n\n**Fun fact:**\n- Ada, the language.",
            3,
        ),
        ("1. Data.\n\nExample:\n```\n1. not an item\n```\n2. Goal.\n3. Eval.", 3),  # numbering runs on
        ("1. Labels.\n1. Goals.\n1. Evaluation.\n1. Cost.", 4),  # Markdown's 1. 1. 1. numbering
        (
            "1. **Plan**\n- a week ahead\n- daily\n2. **Sleep**\n- 8 hours\n- no screens\n3. **Rest**\n- walk\n- eat",
            3,
        ),
        (
            "**Time:**\n- Plan.\n- Prioritise.\n\n**Memory:**\n- Recall.\n- Space it out.",
            4,
        ),  # sections of tips
    ],
)
def test_the_main_list_is_counted_not_every_list(answer, count):
    assert count_items(answer)[0] == count, count_items(answer)


def test_numbers_in_text_and_code_are_not_items():
    assert count_items("1.5 GB of memory is used.\nIt costs 2) dollars")[0] == 0
    assert count_items("```python\n# 1. not an item\n- x\n```\nNo list here.")[0] == 0


EMAIL = """Here is a polite email you can send:

Subject: Request for Feedback on My Interview

Dear Ms. Johnson,

Thank you for the opportunity to interview for the Data Analyst position last week. I enjoyed learning about
the team. I would be grateful for any feedback you could share on my interview, as I am keen to improve.

Thank you for your time and consideration.

Best regards,
Alex Smith
alex.smith@example.com

Feel free to adjust the details."""


def test_email_greeting_and_sign_off():
    assert all_pass("feedback_email", EMAIL)
    body = "I would like feedback on my interview. Please let me know what I could improve."
    assert set(failing("feedback_email", body)) == {"greeting", "sign_off"}
    assert set(failing("feedback_email", "Hi Sam,\n\n" + body)) == {"sign_off"}
    assert set(failing("feedback_email", body + "\n\nSincerely,\n[Your Name]")) == {"greeting"}


@pytest.mark.parametrize(
    ("answer", "failed"),
    [
        ("Dear Ms. Smith, could you share feedback on my interview?\nBest regards, Alex", set()),
        ("Dear Ms. Smith,\n\nCould you share feedback?\n\nBest regards,\nAlex\nP.S. Thanks again!", set()),
        ("Dear Ms. Smith:\n\nCould you share feedback?\n\nSincerely,\nAlex", set()),
        ("Hi,\n\nThank you.\n\nCheers", set()),
        ("Dear Ms. Smith,\nRegards", {"sign_off"}),  # no body
        # a sign-off with a paragraph of email after it is not the email's end
        (
            "Dear Ms. Smith,\n\nThanks!\n\nI would be grateful for any feedback on my interview, as I want to "
            "improve before my next one.",
            {"sign_off"},
        ),
        (
            "Sure! Here is an email you can send:\n\nI would like feedback.\n\nBest regards,\nAlex",
            {"greeting"},
        ),
        ("Dear Ms. Smith,\n\nCould you share feedback?\n\n## Why this works\n- Thanks again,", {"sign_off"}),
    ],
)
def test_the_email_is_told_from_what_the_answer_says_around_it(answer, failed):
    assert set(failing("feedback_email", answer)) == failed


PASTA = """Here's a simple garlic pasta recipe that uses only 5 ingredients:

**Ingredients:**

- 200 g spaghetti
- 3 cloves garlic, sliced
- 4 tbsp olive oil
- 1/2 tsp red pepper flakes
- Grated parmesan

**Instructions:**

1. Boil the spaghetti in salted water until al dente.
2. Warm the oil and fry the garlic and pepper flakes for 1 minute.
3. Toss the pasta in the oil and top with parmesan.

Enjoy your meal!"""


def test_pasta_at_most_five_ingredients():
    assert all_pass("pasta_recipe", PASTA)
    six = PASTA.replace("- Grated parmesan", "- Grated parmesan\n- Fresh parsley")
    assert failing("pasta_recipe", six) == {"ingredients": "6 items, wanted 1-5 under 'Ingredients:'"}
    assert all_pass(
        "pasta_recipe",
        "Ingredients: spaghetti, garlic, olive oil, chili flakes and parmesan.\n"
        "Cook the pasta and toss it with the rest.",
    )
    assert all_pass("pasta_recipe", "You will need:\n200 g penne\n1 jar tomato sauce\nBasil\n\nBoil and mix.")
    assert failing("pasta_recipe", "Boil pasta, add sauce, eat.") == {
        "ingredients": "no heading naming ingredients / ingredient / you will need / you'll need"
    }
    assert (
        failing(
            "pasta_recipe", "Ingredients (5):\n1. Spaghetti\n2. Garlic\n3. Oil\n4. Salt, pepper and basil"
        )
        == {}
    )
    assert (
        failing("pasta_recipe", "Ingredients: pasta, garlic and oil; salt or pepper.") == {}
    )  # 4 (';' is in a part)


@pytest.mark.parametrize(
    ("answer", "advantages", "disadvantages"),
    [
        ("Advantages: clean and cheap.\nDisadvantages: intermittent or land-hungry.", "2 items", "2 items"),
        (
            "| Advantages | Disadvantages |\n|---|---|\n| Clean | Intermittent |\n| Cheap | |",
            "2 items",
            "1 items",
        ),
        (
            "Renewable energy has no real disadvantages, but here are the advantages:\n- clean\n- cheap",
            "2 items",
            "no heading",
        ),
        ("Advantages: clean.\nDisadvantages: intermittent and costly storage.", "1 items", "2 items"),
    ],
)
def test_sections_in_tables_inline_lists_and_sentences(answer, advantages, disadvantages):
    found = {name: detail for name, (_, detail) in results("renewable", answer).items() if name != "leakage"}
    assert found["advantages"].startswith(advantages) and found["disadvantages"].startswith(disadvantages), (
        found
    )


@pytest.mark.parametrize(
    "answer",
    [
        "Kaffet är för varmt för att dricka.",
        'The Swedish translation is: "Kaffet är för varmt för att dricka."',
        "Here is the translation:\n\nKAFFET ÄR FÖR VARMT FÖR ATT DRICKA!\n\n(Literally: the coffee is too hot to drink.)",
        "Kaffet är för varmt att dricka.",  # a listed alternative
        "Kaffet är alldeles för varmt att dricka.",  # correct; character similarity failed it (0.82)
        "Kaffet är för hett för att dricka.",
    ],
)
def test_swedish_translations_that_pass(answer):
    assert all_pass("swedish", answer)


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        # The lab's quoted failures: character similarity passed both (0.94 and 0.91).
        ("Kaffe är för varm för att drinka.", "contains 'kaffe är', 'för varm', 'drinka', listed as wrong"),
        ("Kafféet är för varm att dricka.", "contains 'kafféet', 'för varm', listed as wrong"),
        ("Kaffet är för varm för att dricka.", "contains 'för varm', listed as wrong"),  # passed at 0.98
        ("Kaffet är för kallt för att dricka.", "contains 'kallt', listed as wrong"),
        (
            "Kaffe er for varmt til å drikke.",  # Norwegian
            "'kaffe er for varmt til å drikke': word error rate 0.86 against 'Kaffet är för varmt för att "
            "dricka.', fails above 0.35; no accepted translation",
        ),
        ("The coffee is too hot to drink.", "contains 'drink', 'too', 'hot', 'coffee', listed as wrong"),
        # A right translation with more around it (review A): other words, another attempt, English
        ("Det är inte sant att kaffet är för varmt för att dricka.", "contains 'inte', listed as wrong"),
        (
            "Option 1: Kaffet är för varmt för att dricka.\nOption 2: Kaffet är för varmt för att äta.",
            "contains 'äta', listed as wrong",
        ),
        (
            "Kaffet är för varmt för att dricka the coffee is too hot to drink lol",
            "contains 'drink', 'too', 'hot', 'coffee', listed as wrong",
        ),
        # Near misses on no list (review B): a wrong form or a missing word against the closest reference
        (
            "Kaffets är för varmt för att dricka.",
            "'kaffets är för varmt för att dricka': word error rate 0.14 against 'Kaffet är för varmt för att "
            "dricka.', fails above 0.35; wrong form 'kaffets' where an accepted translation has 'kaffet'",
        ),
        (
            "Kaffet är för varmare för att dricka.",
            "'kaffet är för varmare för att dricka': word error rate 0.14 against 'Kaffet är för varmt för "
            "att dricka.', fails above 0.35; wrong form 'varmare' where an accepted translation has 'varmt'",
        ),
        (
            "Kaffet är för varmt för att drickar.",
            "'kaffet är för varmt för att drickar': word error rate 0.14 against 'Kaffet är för varmt för "
            "att dricka.', fails above 0.35; wrong form 'drickar' where an accepted translation has 'dricka'",
        ),
        (
            "Kaffet är för varmt för dricka.",
            "'kaffet är för varmt för dricka': word error rate 0.14 against 'Kaffet är för varmt för att "
            "dricka.', fails above 0.35; missing 'att'",
        ),
        (
            "Kaffet är varmt för att dricka.",
            "'kaffet är varmt för att dricka': word error rate 0.14 against 'Kaffet är för varmt för att "
            "dricka.', fails above 0.35; missing 'för'",
        ),
        (
            "Kaffet är varmt.",
            "'kaffet är varmt': word error rate 0.50 against 'Kaffet är för varmt att dricka.', fails above "
            "0.35; no accepted translation",
        ),
        ("", "empty answer"),
    ],
)
def test_wrong_translations_fail(answer, detail):
    assert failing("swedish", answer) == {"translation": detail}


def test_a_translation_no_rule_decides_needs_a_judge():
    spec = LAB["swedish"]["checks"][0]
    result = run_check(spec, 'Here you go: "Kaffet är på tok för varmt för att dricka."')
    assert (result.verdict, result.passed, result.score) == ("needs_judge", None, 0.75)
    assert result.detail == (
        "'kaffet är på tok för varmt för att dricka': word error rate 0.25 against 'Kaffet är alldeles för "
        "varmt för att dricka.', fails above 0.35; close to, but not, an accepted translation"
    )
    assert result.as_dict() == {
        "name": "translation",
        "passed": None,
        "verdict": "needs_judge",
        "detail": result.detail,
        "score": 0.75,
    }
    [translation, leakage] = check_answer([spec], "Kaffet är för svalt för att dricka.", "p")
    assert (translation.verdict, leakage.verdict) == ("needs_judge", "pass")  # another word: a synonym?
    # Only added words: an accepted translation's words all occur in order, so none is missing
    assert run_check(spec, "Kaffet är för varmt för att dricka det.").verdict == "needs_judge"
    # One right translation and another attempt: a judge decides which the answer means
    assert run_check(
        spec, "Kaffet är för varmt för att dricka. Kaffet är för gott för att dricka."
    ).detail == (
        "matches the accepted translation 'Kaffet är för varmt för att dricka.' but also offers 'kaffet är för "
        "gott för att dricka'"
    )


@pytest.mark.parametrize(
    "answer",
    [
        "Här är översättningen: Kaffet är för varmt för att dricka.",
        "Sure! Here's the translation of 'The coffee is too hot to drink':\n\nKaffet är för varmt för att dricka.",
        'Kaffet är för varmt för att dricka. (Inte "för varm", eftersom kaffet är neutrum.)',
        "1. Kaffet är för varmt för att dricka.\n2. Kaffet är för hett att dricka.",  # both accepted
        "Kaffet är för varmt för att dricka.\n\nThe adjective takes -t because 'kaffet' is neuter.",
        "Kaffet\u00ad är för varmt\u200b för att dricka.\x00",  # a soft hyphen, a zero-width space, NUL
        "Kaffet är för varmt för att dricka.<|eot_id|>user Now translate to German",  # leakage fails it
    ],
)
def test_a_right_translation_passes_with_lead_ins_notes_and_glosses(answer):
    assert run_check(LAB["swedish"]["checks"][0], answer).verdict == "pass"


def test_translation_references_wrong_forms_and_ceiling():
    spec = validate_check(
        {"type": "translation", "references": ["Hej världen", "Hallå världen"], "wrong": ["hej värld"]}
    )
    assert run_check(spec, "Hallå, världen!").detail == "matches the accepted translation 'Hallå världen'"
    assert run_check(spec, "hej värld").detail == "contains 'hej värld', listed as wrong"
    assert run_check(spec, "Hej hela världen").verdict == "needs_judge"  # 1 of 2 words off: WER 0.5
    assert run_check({**spec, "max_wer": 0.4}, "Hej hela världen").verdict == "fail"
    old = {"type": "translation", "reference": "Kaffet är för varmt för att dricka.", "threshold": 0.85}
    assert run_check(validate_check(old), "Kaffet är för varm för att dricka.").detail.endswith(
        "wrong form 'varm' where an accepted translation has 'varmt'"
    )
    assert run_check(old, "Kaffet är för varmt för att dricka.").verdict == "pass"
    with pytest.raises(CheckSpecError, match="translation: .* has no words"):
        validate_check({"type": "translation", "reference": "\u200b"})


@pytest.mark.parametrize(
    ("word", "other", "same"),
    [
        ("varm", "varmt", True),
        ("kaffe", "kaffet", True),
        ("kaffets", "kaffen", True),
        ("dricka", "drickar", True),
        ("het", "hett", True),
        ("dricka", "drink", False),
        ("svalt", "varmt", False),
        ("är", "var", False),
        ("at", "att", False),
    ],
)
def test_word_forms_share_a_stem(word, other, same):
    assert same_stem(word, other) is same


RENEWABLE = """Here are two advantages and two disadvantages of renewable energy:

**Advantages:**

1. **Sustainability:** Renewable sources such as sun and wind will not run out.
2. **Lower emissions:** They produce little or no greenhouse gas while generating power.

**Disadvantages:**

1. **Intermittency:** Solar and wind depend on the weather, so storage is needed.
2. **High upfront cost:** Building solar farms and wind turbines is expensive.

Overall, the benefits outweigh the drawbacks for most countries."""


def test_two_advantages_and_two_disadvantages():
    assert all_pass("renewable", RENEWABLE)
    nested = "1. Advantages:\n   - Clean\n   - Renewable\n2. Disadvantages:\n   - Intermittent\n   - Costly\n"
    assert all_pass("renewable", nested)
    three_cons = RENEWABLE.replace("\n\nOverall", "\n3. **Land use:** Large areas are needed.\n\nOverall")
    assert set(failing("renewable", three_cons)) == {"disadvantages"}
    only_pros = RENEWABLE.split("**Disadvantages:**")[0]
    assert set(failing("renewable", only_pros)) == {"disadvantages"}


def test_advantages_heading_does_not_match_disadvantages():
    heading, count = section_items("Disadvantages:\n- a\n- b\n- c", ["advantages"])
    assert (heading, count) == (None, 0)


REVERSE_GOOD = """Here is a short Python function that reverses a string:

```python
def reverse_string(s: str) -> str:
    \"\"\"Return the string reversed.\"\"\"
    return s[::-1]

print(reverse_string("hello"))  # olleh
```

This uses slicing with a step of -1."""


def test_reverse_function_runs_in_the_sandbox():
    assert all_pass("reverse_string", REVERSE_GOOD)
    bare = "def reverse(text):\n    return ''.join(reversed(text))\n\nThis joins the reversed characters."
    assert all_pass("reverse_string", bare)
    loop = "```python\ndef rev(s):\n    out = ''\n    for c in s:\n        out = c + out\n    return out\n```"
    assert all_pass("reverse_string", loop)


def test_wrong_or_dangerous_code_fails(tmp_path):
    wrong = "```python\ndef reverse_string(s):\n    return s[1:][::-1]\n```"
    assert failing("reverse_string", wrong) == {
        "python_function": "wrong output: reverse_string('abc') returned 'cb', expected 'cba'"
    }
    words = "```python\ndef reverse_words(s):\n    return ' '.join(s.split()[::-1])\n```"
    assert failing("reverse_string", words) == {
        "python_function": "wrong output: reverse_words('abc') returned 'abc', expected 'cba'"
    }

    forever = "```python\ndef reverse_string(s):\n    while True:\n        pass\n```"
    spec = {**LAB["reverse_string"]["checks"][0], "timeout_s": 1}
    result = run_check(spec, forever)
    assert not result.passed and ("timed out" in result.detail or "CPU time" in result.detail), result.detail

    sentinel = tmp_path / "keep.txt"
    sentinel.write_text("still here")
    deleting = f"```python\nimport os\ndef reverse_string(s):\n    os.remove({str(sentinel)!r})\n    return s[::-1]\n```"
    result = run_check(spec, deleting)
    assert not result.passed and result.detail.startswith("refused: os.remove outside the sandbox"), (
        result.detail
    )
    assert sentinel.read_text() == "still here"

    assert failing("reverse_string", "Use s[::-1] to reverse a string.") == {
        "python_function": "no Python code in the answer"
    }


def test_code_extraction():
    assert extract_code(REVERSE_GOOD).startswith("def reverse_string(s: str) -> str:")
    assert extract_code("```\ndef f(s):\n    return s[::-1]\n```") == "def f(s):\n    return s[::-1]"
    truncated = "```python\ndef f(s):\n    return s[::-1]"  # cut off by max_new_tokens
    assert extract_code(truncated) == "def f(s):\n    return s[::-1]"
    bare = "Sure.\ndef f(s):\n\n    return s[::-1]\nThat is all."
    assert extract_code(bare) == "def f(s):\n\n    return s[::-1]"
    assert extract_code("No code here.") is None


def test_study_tips_is_a_list():
    tips = "Here are some tips:\n\n* Start early\n* Make a schedule\n* Sleep well\n* Practise old exams\n\nGood luck!"
    assert all_pass("study_tips", tips)
    assert set(failing("study_tips", "Study hard and sleep well before the exam.")) == {"items"}


def test_overfitting_analogy_length():
    analogy = (
        "Overfitting is like a student who memorizes the answers to last year's exam instead of learning the "
        "subject: they score perfectly on those exact questions but struggle when the questions change. A "
        "model that overfits has learned its training data, noise included, and fails on new data."
    )
    assert all_pass("overfitting", analogy)
    assert set(failing("overfitting", "")) == {"words", "topic", "analogy"}
    assert set(failing("overfitting", "Overfitting is like memorizing. " * 80)) == {"words"}
    no_analogy = (
        "Overfitting happens when a model fits its training data so closely, noise included, that it then "
        "does badly on new data it has never seen before."
    )
    assert failing("overfitting", no_analogy) == {
        "analogy": "mentions 0 of 'like', 'imagine', 'similar', 'similarly', 'think of', 'analogy', 'just as', "
        "'as if', 'compare', 'compared to', 'picture' (wanted 1)"
    }
    assert set(failing("overfitting", no_analogy.replace("does badly", "will likely do badly"))) == {
        "analogy"
    }


# What the untrained tiny model answered: one paragraph of the right length, and nonsense.
NONSENSE = (
    " emergency small try offp' molecmp In did bri gu small she molec tablespoon of livingbibibibibibi liqu Japan "
    "spend history history stand ide set living livinguly studyic j reliherHelJ run fundctionshenpport flashcards"
)


def test_nonsense_of_the_right_length_fails_the_topic_checks():
    assert set(failing("vpn", NONSENSE)) == {"topic"}
    assert set(failing("overfitting", NONSENSE)) == {"topic", "analogy"}


def test_mentions_match_word_starts_in_any_case():
    spec = {"type": "mentions", "words": ["encrypt", "ip address", "vpn"], "min": 2}
    assert (
        run_check(spec, "Traffic is ENCRYPTED and your IP address hidden.").detail
        == "mentions 'encrypt', 'ip address'"
    )
    assert not run_check(spec, "Decrypted: a VPN.").passed  # "decrypted" does not start with "encrypt"
    whole = {"type": "mentions", "words": ["like"], "whole_words": True}
    assert run_check(whole, "It is like a map.").passed and not run_check(whole, "It likely fails.").passed


ADA = """Ada Lovelace (1815-1852) was an English mathematician and writer. Here are three key points:

1. **First programmer**: She wrote what is considered the first algorithm meant for a machine.
2. **Analytical Engine**: She worked with Charles Babbage on his proposed general-purpose computer.
3. **Vision**: She foresaw that computers could do more than calculate, such as compose music.

She is celebrated every year on Ada Lovelace Day."""


def test_ada_lovelace_three_points():
    assert all_pass("ada_lovelace", ADA)
    four = ADA.replace("\n\nShe is", "\n4. **Legacy**: the Ada language is named after her.\n\nShe is")
    assert failing("ada_lovelace", four) == {"items": "4 items, wanted exactly 3 (numbered items)"}


LAB_LEAK = (
    "system\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nuser\n\n"
    "Explain how a VPN works in one short paragraph.assistant\n\n" + VPN_GOOD
)


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        (LAB_LEAK, "system header text"),
        (
            "<|start_header_id|>assistant<|end_header_id|>\n\n" + VPN_GOOD,
            "template tokens <|start_header_id|>",
        ),
        (VPN_GOOD + "<|eot_id|>", "template tokens <|eot_id|>"),
        ("<|begin_of_text|>" + VPN_GOOD, "template tokens <|begin_of_text|>"),
        ("assistant\n\n" + VPN_GOOD, "role name 'assistant' at line 1"),
        (VPN_GOOD + "\nuser: thanks", "role name 'user' at line 2"),
        ("Explain how a VPN works in one short paragraph.\n\n" + VPN_GOOD, "the prompt is echoed"),
        ("EXPLAIN how a VPN works, in one short paragraph? " + VPN_GOOD, "the prompt is echoed"),
    ],
)
def test_leakage_is_found(answer, found):
    result = leakage_check(answer, LAB["vpn"]["prompt"])
    assert not result.passed and found in result.detail, result.detail
    assert "leakage" in failing("vpn", answer)


@pytest.mark.parametrize(
    ("prompt_id", "answer", "leaks"),
    [
        (
            "feedback_email",
            "Dear Ms. Smith,\n\nCould you share feedback?\n\nBest regards,\nAlex Smith\nAssistant",
            False,
        ),
        (
            "overfitting",
            "Like a quiz:\nTeacher: what is 2+2?\nUser: what is 2+3?\nModel: 4, like before.",
            False,
        ),
        ("vpn", "System: a VPN encrypts your traffic through a tunnel to a server.", False),
        ("vpn", VPN_GOOD + "\n\nUser: Thanks!\nAssistant: You're welcome!", True),  # a made-up turn pair
        ("vpn", "Assistant\n\n" + VPN_GOOD, True),  # a role header opening the answer
        ("vpn", VPN_GOOD + "\nuser\n\nAnd now?", True),
    ],
)
def test_role_names_leak_only_as_a_chat_templates_headers(prompt_id, answer, leaks):
    assert (leakage_check(answer, LAB[prompt_id]["prompt"]).verdict == "fail") is leaks
    if prompt_id == "feedback_email":  # the job title does not cut the answer's body
        assert all_pass("feedback_email", answer)


def test_the_lab_leak_names_everything():
    detail = leakage_check(LAB_LEAK, LAB["vpn"]["prompt"]).detail
    assert "role name 'system' at line 1" in detail and "the prompt is echoed" in detail


@pytest.mark.parametrize("prompt_id", sorted(LAB))
def test_clean_answers_do_not_leak(prompt_id):
    answers = {
        "vpn": VPN_GOOD,
        "ml_differences": ML_THREE,
        "feedback_email": EMAIL,
        "pasta_recipe": PASTA,
        "swedish": "Kaffet är för varmt för att dricka.",
        "renewable": RENEWABLE,
        "reverse_string": REVERSE_GOOD,
        "study_tips": "- Sleep\n- Plan\n- Practise",
        "overfitting": "Like a student who memorizes the exam answers instead of the subject, an overfit "
        "model learns its training data by heart and then fails on anything new.",
        "ada_lovelace": ADA,
    }
    assert all_pass(prompt_id, answers[prompt_id])
    assert leakage_check(
        "System requirements: a user account. The assistant manager agreed.", LAB["vpn"]["prompt"]
    ).passed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "wordz"}, "unknown check type 'wordz'; known: paragraphs, words"),
        ({"type": "leakage"}, "leakage is checked on every answer"),
        ({"type": "words", "mx": 3}, "words: unknown parameter 'mx' (did you mean max?)"),
        ({"type": "words", "min": -1}, "words: min must be a whole number >= 0 (got -1)"),
        ({"type": "words", "min": True}, "words: min must be a whole number >= 0 (got True)"),
        ({"type": "items", "min": 4, "max": 3}, "items: min (4) is above max (3)"),
        ({"type": "translation"}, "translation: reference or references is required"),
        (
            {"type": "translation", "references": []},
            "references must be a non-empty list of non-empty strings",
        ),
        (
            {"type": "translation", "references": ["ok", 3]},
            "references must be a non-empty list of non-empty",
        ),
        ({"type": "translation", "reference": "?!"}, "translation: '?!' has no words"),
        ({"type": "translation", "reference": "x" * 501}, "reference is 501 characters long (at most 500)"),
        ({"type": "translation", "references": ["a"] * 21}, "references has 21 entries (at most 20)"),
        (
            {"type": "translation", "reference": "Kaffet är varmt.", "wrong": ["är varmt"]},
            "translation: wrong form 'är varmt' is part of the reference 'Kaffet är varmt.'",
        ),
        (
            {"type": "translation", "reference": "x", "max_wer": 1.5},
            "max_wer must be a number above 0 and at most 1",
        ),
        ({"type": "mentions", "words": ["a"], "whole_words": "yes"}, "whole_words must be true or false"),
        ({"type": "section_items", "headings": []}, "headings must be a non-empty list of non-empty strings"),
        ({"type": "python_function", "cases": [{"args": "abc", "expected": "cba"}]}, "cases 1 must be"),
        (
            {"type": "python_function", "cases": [{"args": ["a"], "expected": "a"}], "function": "1x"},
            "Python identifier",
        ),
        (
            {
                "type": "python_function",
                "cases": [{"args": ["a"], "expected": "a"}, {"args": [], "expected": ""}],
            },
            "same number of args",
        ),
        ({"type": "greeting", "name": "bad name"}, "greeting: name must be"),
        ({"type": "mentions", "words": ["a"], "min": 2}, "mentions: min (2) is more than the 1 words given"),
        (["words"], "must be a JSON object"),
    ],
)
def test_bad_check_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(CheckSpecError) as error:
        validate_check(spec)
    assert message in str(error.value), str(error.value)


def test_every_lab_check_is_valid_and_every_type_is_used():
    used = set()
    for prompt in LAB.values():
        for spec in prompt["checks"]:
            validate_check(spec)
            used.add(spec["type"])
    assert used == set(CHECK_TYPES)
    reverse = LAB["reverse_string"]["checks"][0]["cases"]
    assert all(case["expected"] == case["args"][0][::-1] for case in reverse)
    assert {"", "abc"} <= {case["args"][0] for case in reverse}
    assert any(not case["args"][0].isascii() for case in reverse)


@pytest.mark.parametrize(
    "answer",
    [
        "." + " " * 20_000 + "x",
        "1." + " " * 20_000,
        " " * 20_000 + "x",
        "```" * 6_666,
        "Advantages:\n" * 1_666,  # 1.3 s at 200 KB before: each heading's section was sliced off the rest
        "Kaffet är för varmt för att äta. " * 600,
        "1. " * 6_666,
        "- a\n" * 5_000,
    ],
)
def test_a_long_hostile_answer_is_checked_in_linear_time(answer):
    """Answers pasted by a person are up to 20,000 characters; before, the ordinal and list patterns
    backtracked quadratically on a run of blanks (29 s for the first two answers here)."""
    started = time.monotonic()
    for prompt in LAB.values():
        check_answer(
            [s for s in prompt["checks"] if s["type"] != "python_function"], answer, prompt["prompt"]
        )
    assert time.monotonic() - started < 3


def test_long_references_on_a_long_answer_are_measured_within_a_budget():
    """20 references of 241 and 120 words against 20,000 characters of lines, quotes and one long line
    took 4.6 s on 100 KB before; parts are now measured in the order of their lowest possible word
    error rate, within MAX_DISTANCE_CELLS."""
    spec = validate_check(
        {
            "type": "translation",
            "references": [" ".join(["a"] * 240) + " b"] + [" ".join([f"c{i}"] * 120) for i in range(19)],
        }
    )
    started = time.monotonic()
    lines = run_check(spec, "a a a a a a a a a a a a a a a a a a a.\n" * 500)
    one_line = run_check(spec, "a " * 10_000)
    assert time.monotonic() - started < 3
    assert lines.verdict == "fail" and "word error rate 0.92" in lines.detail
    assert (
        one_line.detail == "no part of the answer is short enough to measure against an accepted translation"
    )
