"""The search loops and logits processors against their definitions and transformers' pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor,
    MinLengthLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
)

from s2t_jax.decoding.beam_search import beam_search, length_penalty_table
from s2t_jax.decoding.greedy import greedy_search
from s2t_jax.decoding.processors import ban_repeated_ngrams, make_logits_processor, search_options
from s2t_jax.decoding.settings import GenerationSettings
from s2t_jax.models.kv_cache import reorder_self_cache
from s2t_jax.models.model import Speech2Text
from tests.decoding.conftest import speech_features


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("cur_len", [1, 2, 3, 6, 11])
def test_ngram_ban_matches_transformers(n, cur_len):
    rng = np.random.default_rng(n * 100 + cur_len)
    vocab, max_length = 7, 12
    seqs = rng.integers(0, 4, (5, max_length))  # a small alphabet, so n-grams repeat
    seqs[:, cur_len:] = 1  # fill past the valid tokens must be ignored
    scores = rng.standard_normal((5, vocab)).astype(np.float32)
    ref = NoRepeatNGramLogitsProcessor(n)(torch.tensor(seqs[:, :cur_len]), torch.tensor(scores))
    ours = ban_repeated_ngrams(jnp.asarray(scores), jnp.asarray(seqs), cur_len, n)
    np.testing.assert_array_equal(np.asarray(ours), ref.numpy())
    if cur_len >= n + 2:
        assert np.isinf(ref.numpy()).any()  # not vacuous


@pytest.mark.parametrize("cur_len", [1, 2, 5])
def test_min_length_and_forced_bos_match_transformers(cur_len):
    rng = np.random.default_rng(cur_len)
    seqs = rng.integers(3, 9, (3, 8))
    scores = rng.standard_normal((3, 9)).astype(np.float32)
    ref = torch.tensor(scores)
    for proc in (MinLengthLogitsProcessor(4, 2), ForcedBOSTokenLogitsProcessor(5)):
        ref = proc(torch.tensor(seqs[:, :cur_len]), ref)
    settings = GenerationSettings(max_length=8, min_length=4, forced_bos_token_id=5)
    process = make_logits_processor(settings.static(), search_options(settings))
    ours = process(jnp.asarray(scores), jnp.asarray(seqs), cur_len)
    np.testing.assert_array_equal(np.asarray(ours), ref.numpy())


@pytest.mark.parametrize("penalty", [1.0, 0.5, 1.7, -0.3, 0.0])
def test_length_penalty_divides_as_torch(penalty):
    """transformers divides a float32 tensor by a Python `int ** float`; so must we, bitwise."""
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 50
    table = np.asarray(length_penalty_table(40, penalty))
    for n in (1, 7, 23, 40):
        ref = (torch.tensor(x) / (n**penalty)).numpy()
        np.testing.assert_array_equal(x / table[n], ref)


def _toy_step(table):
    """A decoder whose next-token log-probs depend only on the last token: a Markov chain."""
    logits = jnp.asarray(np.log(table), jnp.float32)  # [vocab, vocab]

    def step(tokens, index, cache):
        return logits[tokens], cache

    return step


def test_beam_search_finds_the_known_best_on_a_markov_chain():
    """t5x-style toy: greedy takes 3 (p=.6) then is stuck with p=.4 continuations; beam search
    finds 4 -> eos with total probability .4 * 1.0 > .6 * .4."""
    eos, vocab = 2, 6
    table = np.full((vocab, vocab), 1e-6)
    table[0, 3], table[0, 4] = 0.6, 0.4  # from the start token (0)
    table[3, 5], table[3, eos] = 0.6, 0.4
    table[4, eos] = 1.0
    table[5, eos] = 1.0
    table /= table.sum(1, keepdims=True)
    ids, scores, lengths = beam_search(
        _toy_step(table),
        {},
        1,
        num_beams=2,
        max_length=6,
        decoder_start_token_id=0,
        eos_token_id=eos,
        pad_token_id=1,
        length_penalty=0.0,
        early_stopping=True,
        num_return_sequences=2,
    )
    assert np.asarray(ids)[0, :3].tolist() == [0, 4, eos]
    np.testing.assert_allclose(np.asarray(scores)[0], np.log(0.4), atol=1e-4)
    assert np.asarray(lengths).tolist() == [3, 4]  # [0 4 eos], then [0 3 5 eos]


def _search_with(model, x, mask, num_beams, max_length, beam=True):
    """Our beam search (even at num_beams=1) or greedy, straight from the search functions."""
    module = Speech2Text(model.config)
    settings = GenerationSettings(
        num_beams=num_beams,
        max_length=max_length,
        early_stopping=True,
        decoder_start_token_id=model.config.decoder_start_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
    )
    variables = {"params": model.params}
    enc, enc_mask = module.apply(variables, x, mask, method=Speech2Text.encode)
    beams = num_beams if beam else 1
    cache = module.apply(
        variables, enc, enc_mask, beams, max_length - 1, method=Speech2Text.init_cache
    )

    def step(tokens, index, cache):
        return module.apply(
            variables, tokens, index, cache, max_length, method=Speech2Text.decode_step
        )

    if not beam:
        return greedy_search(
            step,
            cache,
            x.shape[0],
            max_length=max_length,
            decoder_start_token_id=settings.decoder_start_token_id,
            eos_token_id=settings.eos_token_id,
            pad_token_id=settings.pad_token_id,
        )
    return beam_search(
        step,
        cache,
        x.shape[0],
        num_beams=num_beams,
        max_length=max_length,
        decoder_start_token_id=settings.decoder_start_token_id,
        eos_token_id=settings.eos_token_id,
        pad_token_id=settings.pad_token_id,
        early_stopping=True,
        reorder_cache=reorder_self_cache,
    )


def test_beam_width_one_equals_greedy(varied):
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    run = jax.jit(_search_with, static_argnums=(0, 3, 4, 5))
    beam_ids, _, beam_len = run(ours, x, mask, 1, 30, True)
    greedy_ids, greedy_len, _ = run(ours, x, mask, 1, 30, False)
    np.testing.assert_array_equal(np.asarray(beam_ids), np.asarray(greedy_ids))
    np.testing.assert_array_equal(np.asarray(beam_len), np.asarray(greedy_len))
    assert len(set(np.asarray(greedy_len).tolist())) > 1  # some stop early, some do not


@pytest.mark.parametrize("name", ["conv3_gelu_untied", "wide_untied"])
def test_cached_greedy_equals_teacher_forced_argmax_rollout(varied, name):
    """The cached decode loop against re-running the full teacher-forced forward each step.

    One caveat, shared with transformers: a pad token generated mid-sequence takes the padding
    position in both, but the teacher-forced forward then numbers the following tokens without
    it (fairseq's make_positions) while the cache numbers them by step. Rows are therefore
    compared up to their first generated pad, and most rows must have none.
    """
    _, ours, _ = varied(name)
    cfg = ours.config
    x, mask = speech_features(cfg.input_feat_per_channel)
    max_length = 30  # the batch and length of the parity tests: their compiled search is reused
    # Fixed-shape decoder input (one compile): trailing pads cannot reach earlier positions.
    ids = np.full((x.shape[0], max_length), cfg.pad_token_id, np.int32)
    ids[:, 0] = cfg.decoder_start_token_id
    done = np.zeros(x.shape[0], bool)
    for t in range(1, max_length):
        logits = np.asarray(ours(x, mask, decoder_input_ids=ids).logits[:, t - 1])  # [b, vocab]
        ids[:, t] = np.where(done, cfg.pad_token_id, logits.argmax(-1))
        done |= ids[:, t] == cfg.eos_token_id
        if done.all():
            ids = ids[:, : t + 1]
            break
    cached = ours.generate(x, mask, num_beams=1, max_length=max_length, buckets=None)
    assert cached.shape == ids.shape
    clean = 0
    for row, ref in zip(cached, ids):
        end = np.flatnonzero(ref == cfg.eos_token_id)
        end = end[end > 0][0] + 1 if (end > 0).any() else len(ref)
        pads = np.flatnonzero(ref[:end] == cfg.pad_token_id)
        stop = pads[0] + 1 if len(pads) else len(ref)
        np.testing.assert_array_equal(row[:stop], ref[:stop])
        clean += not len(pads)
    assert clean >= 3
