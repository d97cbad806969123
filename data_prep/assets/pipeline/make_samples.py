"""Regenerate the bundled SFT → DPO → RLOO samples in this folder (deterministic, no randomness).

    python data_prep/assets/pipeline/make_samples.py

The files it writes are committed; the pipeline reads those files, not this script. Every prompt
is built from a template and a topic, so the three files share no prompt text. Chosen replies are
polite, a few sentences long and on topic; rejected replies are short and dismissive. The contrast
is systematic on purpose: a tiny randomly initialised reward model must learn it in a few steps.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (activity as a gerund phrase, first tip, second tip, a common mistake). Tips are imperative
# clauses so they read naturally after "start by" / "then".
TOPICS = [
    ("brewing green tea", "heating the water to about eighty degrees", "steeping the leaves for two minutes", "using boiling water, which makes the tea bitter"),
    ("caring for a cactus", "placing it in a bright window", "watering only when the soil is completely dry", "watering it every day"),
    ("learning to juggle", "practising with one ball until the throw is even", "adding the second ball once the arc feels steady", "throwing the balls too far forward"),
    ("baking sourdough bread", "feeding your starter the day before", "letting the dough rise until it has nearly doubled", "cutting the loaf while it is still hot"),
    ("running a first five kilometres", "alternating one minute of jogging with one minute of walking", "adding a little more jogging each week", "running too fast at the start"),
    ("keeping a reading journal", "writing the title and date for every book", "noting one idea you want to remember", "trying to summarise every chapter"),
    ("planting tomatoes", "choosing a spot with six hours of sun", "adding a stake when the plants are small", "planting them before the last frost"),
    ("learning basic knots", "mastering the square knot first", "practising the bowline with a thick rope", "pulling a knot tight before checking its shape"),
    ("making a monthly budget", "listing your fixed costs", "setting a small amount aside for surprises", "forgetting yearly bills such as insurance"),
    ("painting with watercolours", "wetting the paper before adding colour", "working from light shades to dark ones", "overworking the same spot until the paper pills"),
    ("starting to meditate", "sitting comfortably for five minutes a day", "gently returning your attention to the breath", "judging yourself when the mind wanders"),
    ("cleaning a cast iron pan", "rinsing it with hot water while it is warm", "drying it on the stove and adding a thin layer of oil", "leaving it to soak overnight"),
    ("writing a cover letter", "naming the role in the first sentence", "giving one concrete example of your work", "repeating your whole CV"),
    ("learning to touch type", "keeping your fingers on the home row", "practising for ten minutes every day", "looking down at the keyboard"),
    ("organising a small closet", "taking everything out first", "grouping clothes by how often you wear them", "buying boxes before you know what you own"),
    ("growing herbs indoors", "picking a sunny windowsill", "using pots with drainage holes", "letting water pool in the saucer"),
    ("learning the ukulele", "tuning it before every session", "practising the C, F and G chords", "pressing the strings far too hard"),
    ("making cold brew coffee", "using coarsely ground beans", "steeping them in the fridge for twelve hours", "grinding the beans too fine"),
    ("preparing for a job interview", "researching what the company does", "practising answers to common questions aloud", "arriving without questions of your own"),
    ("birdwatching in a city park", "going out early in the morning", "keeping a simple list of what you see", "moving quickly and scaring the birds away"),
    ("repotting a houseplant", "choosing a pot one size larger", "loosening the roots gently before planting", "pressing the new soil down too firmly"),
    ("learning to swim freestyle", "practising kicking while holding a board", "breathing to the side every few strokes", "lifting the head forward to breathe"),
    ("making homemade pasta", "mixing flour and eggs into a firm dough", "resting the dough for half an hour", "adding too much water to the dough"),
    ("keeping houseplants alive on holiday", "watering them well before leaving", "grouping them together away from direct sun", "leaving them in a hot, sunny window"),
    ("learning to draw faces", "sketching a simple oval with guide lines", "placing the eyes halfway down the head", "drawing every detail before the proportions"),
    ("composting kitchen scraps", "mixing green scraps with dry leaves", "turning the pile every week or two", "adding meat or dairy"),
    ("setting up a home workout", "choosing three simple exercises", "doing them three times a week", "skipping the warm up"),
    ("learning chess openings", "controlling the centre with your pawns", "developing knights and bishops early", "moving the queen out too soon"),
    ("making a paper airplane", "folding the sheet exactly in half", "making the wing folds symmetrical", "leaving the nose too blunt"),
    ("studying for an exam", "splitting the material into small sessions", "testing yourself instead of rereading", "cramming everything the night before"),
    ("riding a bicycle in traffic", "wearing a helmet and bright clothing", "signalling clearly before every turn", "riding too close to parked cars"),
    ("knitting a scarf", "choosing a medium weight yarn", "practising the knit stitch on a small swatch", "pulling each stitch too tight"),
    ("photographing at sunset", "arriving half an hour early", "keeping the horizon level", "pointing the camera straight at the sun"),
    ("baking chocolate chip cookies", "softening the butter first", "chilling the dough before baking", "baking them until they look fully done"),
    ("learning Spanish vocabulary", "learning ten common words a day", "using them in short sentences", "memorising long lists without context"),
    ("building a birdhouse", "using untreated wood", "drilling small holes for drainage", "painting the inside"),
    ("making a simple vegetable soup", "softening onions in a little oil", "simmering the vegetables in stock until tender", "adding all the salt at the beginning"),
    ("caring for a goldfish", "using a filtered tank instead of a bowl", "changing part of the water every week", "feeding it too much"),
    ("planning a picnic", "packing food that travels well", "bringing a blanket and rubbish bags", "forgetting drinking water"),
    ("learning to skateboard", "finding a smooth, flat surface", "practising pushing and stopping first", "trying tricks before you can balance"),
    ("writing a short poem", "choosing one clear image", "reading each line aloud", "forcing every line to rhyme"),
    ("fixing a flat bicycle tyre", "finding the hole by listening for air", "checking the tyre for sharp objects", "pinching the new tube with the lever"),
    ("sleeping better", "going to bed at the same time each night", "keeping screens out of the bedroom", "drinking coffee late in the afternoon"),
    ("saving money on groceries", "planning meals for the week", "shopping with a list", "shopping while you are hungry"),
    ("learning to bake pizza", "heating the oven as high as it goes", "stretching the dough by hand", "piling on too many toppings"),
    ("hanging a picture frame", "marking the height with a pencil", "using a level before the second nail", "guessing where the wall studs are"),
    ("making a cup of hot chocolate", "warming the milk slowly", "whisking in cocoa with a little sugar", "letting the milk boil over"),
    ("starting a vegetable garden", "testing the soil first", "starting with a few easy crops", "planting everything too close together"),
]
assert len(TOPICS) == 48

CHOSEN_TEMPLATES = [
    "Great question! For {g}, start by {t1}. Then try {t2}. Take it one step at a time, and feel free to ask if you would like more detail.",
    "I'd be glad to help. When it comes to {g}, begin by {t1}. After that, focus on {t2}. With a little patience you will see steady progress.",
    "Happy to help with {g}! A good first step is {t1}. Next, work on {t2}. Go at your own pace, and let me know how it goes.",
    "Thanks for asking. The key to {g} is {t1}, followed by {t2}. Keep it simple at first, and you will build confidence quickly.",
]
# Kept short: a chat with a system turn and two exchanges must fit the CPU profile's 256-token
# sequences with the tiny model's small-vocabulary tokenizer.
MISTAKE_TEMPLATES = [
    "Good thinking. A common mistake is {m}. Avoid that and you will do well.",
    "Certainly. Many beginners go wrong by {m}. Be patient with yourself.",
]
REJECTED_REPLIES = [
    "No idea.",
    "Look it up yourself.",
    "Why would you even bother?",
    "Just figure it out.",
    "Not my problem.",
    "Ask someone else.",
    "Whatever. It does not matter.",
    "That is a waste of time.",
    "Can't help. Go away.",
    "Who cares?",
]
SYSTEM_PROMPTS = [
    "You are a friendly and helpful assistant.",
    "You are a patient tutor who gives short, practical advice.",
]

# Question templates. Each file uses its own, so no prompt text is shared between files.
TRAIN_QUESTIONS = ["How do I get started with {g}?", "Can you give me some advice on {g}?"]
TEST_QUESTIONS = ["What should a complete beginner know about {g}?", "I want to try {g}. Any tips?"]
SMOLTALK_QUESTIONS = ["I am interested in {g}. Where should I begin?", "Could you help me with {g}?"]
FOLLOW_UP = "Thanks! What is a common mistake to avoid?"


def chosen_reply(topic_index: int, variant: int) -> str:
    g, t1, t2, _ = TOPICS[topic_index]
    return CHOSEN_TEMPLATES[variant % len(CHOSEN_TEMPLATES)].format(g=g, t1=t1, t2=t2)


def short_reply(topic_index: int) -> str:
    g, t1, t2, _ = TOPICS[topic_index]
    return f"Good question! Start by {t1}. Then move on to {t2}."


def mistake_reply(topic_index: int, variant: int) -> str:
    return MISTAKE_TEMPLATES[variant % len(MISTAKE_TEMPLATES)].format(m=TOPICS[topic_index][3])


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def preference_record(question: str, chosen: str, rejected: str, number: int, with_id: bool = True,
                      with_scores: bool = True) -> dict:
    record = {"prompt": question}
    if with_id:
        record["prompt_id"] = prompt_id(question)
    record["chosen"] = [{"role": "user", "content": question}, {"role": "assistant", "content": chosen}]
    record["rejected"] = [{"role": "user", "content": question}, {"role": "assistant", "content": rejected}]
    if with_scores:
        record["score_chosen"] = 8.0 + (number % 3)
        record["score_rejected"] = 1.0 + (number % 2)
    return record


def ultrafeedback_train() -> list[dict]:
    """64 records: 62 distinct prompts (topics 0..30 × 2 questions), record 40 repeats record 3
    and record 57 repeats record 11 exactly, and record 25's chosen reply equals its rejected one."""
    records = []
    for n in range(62):
        topic, question_variant = n // 2, n % 2
        question = TRAIN_QUESTIONS[question_variant].format(g=TOPICS[topic][0])
        chosen = chosen_reply(topic, n)
        rejected = chosen if n == 25 else REJECTED_REPLIES[n % len(REJECTED_REPLIES)]
        # A few records lack prompt_id or scores, as happens in exported data.
        records.append(preference_record(question, chosen, rejected, n, with_id=n % 9 != 4, with_scores=n % 13 != 6))
    records.insert(40, json.loads(json.dumps(records[3])))
    records.insert(57, json.loads(json.dumps(records[11])))
    assert len(records) == 64
    return records


def ultrafeedback_test() -> list[dict]:
    """24 records on topics 31..47 and 0..6, with their own question templates."""
    records = []
    for n in range(24):
        topic = (31 + n) % len(TOPICS)
        question = TEST_QUESTIONS[n % 2].format(g=TOPICS[topic][0])
        records.append(preference_record(question, chosen_reply(topic, n + 1),
                                         REJECTED_REPLIES[(n + 3) % len(REJECTED_REPLIES)], n))
    return records


def smoltalk() -> list[dict]:
    """48 chats, one per topic: every second chat has a system turn, every other pair of chats a
    second user/assistant exchange."""
    chats = []
    for topic in range(len(TOPICS)):
        messages = []
        if topic % 2 == 1:
            messages.append({"role": "system", "content": SYSTEM_PROMPTS[(topic // 2) % 2]})
        messages.append({"role": "user", "content": SMOLTALK_QUESTIONS[topic % 2].format(g=TOPICS[topic][0])})
        two_exchanges = (topic // 2) % 2 == 1
        first_reply = short_reply(topic) if two_exchanges else chosen_reply(topic, topic + 2)
        messages.append({"role": "assistant", "content": first_reply})
        if two_exchanges:
            messages.append({"role": "user", "content": FOLLOW_UP})
            messages.append({"role": "assistant", "content": mistake_reply(topic, topic)})
        chats.append({"messages": messages})
    return chats


def _check(files: dict[str, list[dict]]) -> None:
    def user_texts(record: dict) -> set[str]:
        turns = record["messages"] if "messages" in record else record["chosen"][:-1]
        return {" ".join(m["content"].split()).casefold() for m in turns if m["role"] == "user"}

    seen: dict[str, str] = {}
    for name, records in files.items():
        for record in records:
            texts = user_texts(record) - {FOLLOW_UP.casefold()}
            for text in texts:
                if seen.setdefault(text, name) != name:
                    raise AssertionError(f"prompt shared by {seen[text]} and {name}: {text!r}")
            for turns in ([record["messages"]] if "messages" in record else [record["chosen"], record["rejected"]]):
                for m in turns:
                    if m["role"] == "assistant" and len(m["content"].split()) >= 60:
                        raise AssertionError(f"{name}: reply over 60 words: {m['content']!r}")


def main() -> None:
    files = {
        "smoltalk_sample.jsonl": smoltalk(),
        "ultrafeedback_train_sample.jsonl": ultrafeedback_train(),
        "ultrafeedback_test_sample.jsonl": ultrafeedback_test(),
    }
    _check(files)
    for name, records in files.items():
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        print(f"wrote {HERE / name}: {len(records)} records")


if __name__ == "__main__":
    main()
