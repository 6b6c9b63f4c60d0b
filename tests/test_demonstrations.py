"""Which rated answers the policy imitates (`ppo.imitation_coef`), read from a real SQLite store."""

from rlhf_app.demonstrations import COMPARE_WINNER_WEIGHT, Demonstration, liked_answers

PROMPT = "Name a pet."


def gen(store, text, prompt=PROMPT):
    return store.add_generation(prompt, text, "m", 0)


def test_liked_answers_weigh_each_answer_by_its_mean_utility(store):
    five, four, three, one = (gen(store, t) for t in ("A cat.", "A dog.", "A fish.", "A rock."))
    mixed, up, down = gen(store, "A mouse."), gen(store, "A kitten.", "Say hi."), gen(store, "Meh.", "Say hi.")
    for gid, value in ((five, 5), (four, 4), (three, 3), (one, 1)):
        store.rate(gid, "ana", "score", value)
    store.rate(mixed, "ana", "score", 5)
    store.rate(mixed, "bo", "score", 2)  # (1 - 0.5) / 2
    store.rate(up, "ana", "thumb", 1)
    store.rate(down, "ana", "thumb", -1)
    assert liked_answers(store) == [
        Demonstration(PROMPT, "A cat.", 1.0),
        Demonstration(PROMPT, "A dog.", 0.5),
        Demonstration(PROMPT, "A mouse.", 0.25),
        Demonstration("Say hi.", "A kitten.", 1.0),
    ]


def test_a_changed_rating_counts_as_it_is_now(store):
    g = gen(store, "A cat.")
    store.rate(g, "ana", "score", 5)
    store.rate(g, "ana", "score", 2)
    assert liked_answers(store) == []


def test_ab_winners_are_liked_at_half_weight_unless_rated_higher(store):
    a, b, c, d = (gen(store, t) for t in ("A cat.", "A rock.", "A dog.", "A stick."))
    store.compare(a, b, "ana", "a")
    store.compare(c, d, "ana", "b")
    store.rate(a, "bo", "score", 5)  # rated 5 as well: keeps its full weight
    e, f = gen(store, "A fish."), gen(store, "A log.")
    store.compare(e, f, "ana", "tie")
    assert liked_answers(store) == [
        Demonstration(PROMPT, "A cat.", 1.0),
        Demonstration(PROMPT, "A stick.", COMPARE_WINNER_WEIGHT),
    ]


def test_both_bad_counts_against_a_score_as_the_reward_model_reads_it(store):
    a, b = gen(store, "A cat."), gen(store, "A dog.")
    store.rate(a, "ana", "score", 5)
    store.rate(b, "ana", "score", 4)
    store.compare(a, b, "bo", "both_bad")  # a: (1 - 1) / 2 = 0, b: (0.5 - 1) / 2 < 0
    assert liked_answers(store) == []


def test_empty_answers_and_an_empty_store_give_nothing(store):
    assert liked_answers(store) == []
    store.rate(gen(store, "   "), "ana", "score", 5)
    assert liked_answers(store) == []


def test_an_answer_that_ended_on_its_own_is_imitated_with_its_end(store, tiny):
    from rlhf_app.ppo import demonstration_batch

    short = store.add_generation(PROMPT, "yes good", "m", 0, finish_reason="eos")
    capped = store.add_generation(PROMPT, "yes good", "m", 0, finish_reason="length")
    for gid in (short, capped):
        store.rate(gid, "ana", "score", 5)
    liked = liked_answers(store)
    assert [d.ended for d in liked] == [True, False]
    tok = tiny.tokenizer
    batch, _ = demonstration_batch(tok, liked, max_new_tokens=8, device="cpu")
    ended, cut = (row[m].tolist() for row, m in zip(batch.answers, batch.mask))
    assert ended == cut + [tok.eos_token_id] and tok.eos_token_id not in cut
    # cut at the cap, an answer has no end to imitate
    batch, _ = demonstration_batch(tok, liked[:1], max_new_tokens=len(cut), device="cpu")
    assert batch.answers[0][batch.mask[0]].tolist() == cut
