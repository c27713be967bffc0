"""The T2CR model's wiring, the K-exemplar vote and the difficulty (DD) scaling, each against an independent
computation.

The reference for the model's outputs is a separate forward of its pieces, called one by one in the order
the paper documents (Sec. 3, MODEL.md): the backbone on each 4-frame clip of each video alone (frames
sliced by hand from the hand-derived clip starts), the target-aware attention per path, the N -> M
expansion of the auxiliary path, the path fusion, the difference transformer with explicit query /
exemplar roles, the shared regressor. The vote is a Python loop over the unmasked exemplars; the DD
scaling is checked with numbers worked out by hand. Non-default settings throughout: a 4 + 3 clip plan,
K = 3 below the pool size, masked exemplars, DD of 2.7 and 3.4, loss weights other than 1.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from helpers import random_videos, tiny_config

from t2cr.data.datamodule import PairTrainDataset, ScoreSpace, VotingDataset
from t2cr.data.exemplars import ExemplarPools
from t2cr.data.samples import Sample
from t2cr.features import FeatureTable
from t2cr.losses import LossConfig
from t2cr.models.base import mean_vote
from t2cr.models.t2cr import VoteOutput
from t2cr.module import OptimConfig, T2CRModule

FRAMES, CLIP_LENGTH, SIZE = 20, 4, 12
BASE_STARTS = [0, 4, 8, 12]  # M = 4, given explicitly
# '3-clip-avg1': 3 starts from the first to the last base start, interval round(12 / 2) = 6 (worked by hand)
AUX_STARTS = [0, 6, 12]
TOL = {"rtol": 1e-5, "atol": 1e-5}


def small_config(**overrides):
    """Tiny backbone, M = 4 base clips and N = 3 auxiliary clips of 4 frames, a 2-layer decoder."""
    settings = {"clips.num_frames": FRAMES, "clips.clip_length": CLIP_LENGTH, "clips.num_base_clips": 4,
                "clips.base_starts": list(BASE_STARTS), "clips.aux_strategy": "3-clip-avg1",
                "decoder.layers": 2, "decoder.heads": 4}
    return tiny_config(num_action_types=4, **{**settings, **overrides})


def make_module(loss: LossConfig | None = None) -> T2CRModule:
    """The LightningModule in eval mode (batch norm on running statistics, so a video's numbers do not depend
    on the other videos of its batch), with batch-norm statistics away from their 0 / 1 start and the
    regressor's last layer scaled up, so that different pairs give clearly different scores."""
    torch.manual_seed(3)
    module = T2CRModule(dataclasses.asdict(small_config()), dataclasses.asdict(loss or LossConfig()),
                        dataclasses.asdict(OptimConfig()), runtime={"channels_last": False})
    generator = torch.Generator().manual_seed(4)
    for layer in module.model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=generator) + 0.5)
    with torch.no_grad():  # untrained scores sit within a few hundredths of each other: spread them
        module.model.regressor.mlp[-1].weight.mul_(100.0)
    return module.eval()


def videos(count: int, seed: int) -> torch.Tensor:
    return random_videos(count, FRAMES, SIZE, seed=seed)[0]


# ------------------------------------------------------------------------- the forward, piece by piece
def clip_features_by_hand(model, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One video (3, T, H, W): the backbone on each clip alone -> base (M, F), auxiliary (N, F)."""
    def run(starts):
        return torch.stack([model.backbone(video[:, s:s + CLIP_LENGTH].unsqueeze(0))[0] for s in starts])
    return run(BASE_STARTS), run(AUX_STARTS)


def encode_by_hand(model, base: torch.Tensor, aux: torch.Tensor) -> SimpleNamespace:
    """One video's clip features -> its tokens, direct score and logits, through the submodules in the
    documented order: attention per path (aux after the N -> M expansion), fusion of both paths, the shared
    regressor on the base path (Eq. 1), the classifier on the base path."""
    base_tokens = model.attention(base.unsqueeze(0))
    aux_tokens = model.attention(model.expansion(aux.unsqueeze(0)))
    fused = model.fusion(base_tokens, aux_tokens)
    direct = model.regressor(base_tokens)[0]
    logits = None if model.classifier is None else model.classifier(base_tokens)[0]
    return SimpleNamespace(base_tokens=base_tokens[0], aux_tokens=aux_tokens[0], tokens=fused[0], direct=direct,
                           logits=logits)


def delta_by_hand(model, query_tokens: torch.Tensor, exemplar_tokens: torch.Tensor) -> torch.Tensor:
    """Eq. 5-6: the query's tokens attend to the exemplar's (decoder), then the regressor."""
    return model.regressor(model.contrast(query_tokens.unsqueeze(0), exemplar_tokens.unsqueeze(0)))[0]


def pair_pieces(model, query: torch.Tensor, exemplar: torch.Tensor) -> dict:
    """Everything the pair forward returns, computed video by video and pair by pair."""
    q = [encode_by_hand(model, *clip_features_by_hand(model, v)) for v in query]
    e = [encode_by_hand(model, *clip_features_by_hand(model, v)) for v in exemplar]
    return {
        "query": q, "exemplar": e,
        "delta": torch.stack([delta_by_hand(model, qi.tokens, ei.tokens) for qi, ei in zip(q, e)]),
        "delta_reverse": torch.stack([delta_by_hand(model, ei.tokens, qi.tokens) for qi, ei in zip(q, e)]),
        # Eq. 14: R(C(f_M, f_N)) of one video, base path as the query of the decoder
        "self_query": torch.stack([delta_by_hand(model, qi.base_tokens, qi.aux_tokens) for qi in q]),
        "self_exemplar": torch.stack([delta_by_hand(model, ei.base_tokens, ei.aux_tokens) for ei in e]),
    }


@pytest.fixture(scope="module")
def pair():
    """Three (query, exemplar) pairs through the model's forward and through the pieces."""
    module = make_module()
    model = module.model
    query, exemplar = videos(3, seed=11), videos(3, seed=12)
    with torch.no_grad():
        output = model(query, exemplar)
        pieces = pair_pieces(model, query, exemplar)
        # what a wrong wiring would give, to show that the batch tells the right one apart
        pieces["self_swapped"] = torch.stack([delta_by_hand(model, qi.aux_tokens, qi.base_tokens)
                                              for qi in pieces["query"]])
    return SimpleNamespace(model=model, output=output, pieces=pieces)


def test_sensitivity_the_batch_tells_query_from_exemplar_and_pair_from_pair(pair):
    """Guard of the tests below: swapping the decoder's roles or the pairs changes the numbers by far more
    than the tolerance, so a wrong wiring cannot pass by coincidence."""
    p = pair.pieces
    assert (p["delta"] - p["delta_reverse"]).abs().min() > 1e-3
    assert (p["delta"] + p["delta_reverse"]).abs().min() > 1e-3  # the reverse is not just the negated delta
    assert (p["delta_reverse"] - p["delta_reverse"].roll(1)).abs().min() > 1e-3
    assert (p["self_query"] - p["self_exemplar"]).abs().min() > 1e-3
    assert (p["self_query"] - p["self_swapped"]).abs().min() > 1e-3
    fused_from_base_only = pair.model.fusion(p["query"][0].base_tokens[None], p["query"][0].base_tokens[None])
    assert (fused_from_base_only[0] - p["query"][0].tokens).abs().max() > 1e-3


@pytest.mark.parametrize("role", ["query", "exemplar"])
def test_each_paths_tokens_direct_score_and_logits_match_the_pieces(pair, role):
    """f_M, expanded f_N, fused tokens (V, 2M, d), direct score and logits of each video against its own
    clip-by-clip forward through the submodules."""
    encoding, by_hand = getattr(pair.output, role), pair.pieces[role]
    torch.testing.assert_close(encoding.base_tokens, torch.stack([v.base_tokens for v in by_hand]), **TOL)
    torch.testing.assert_close(encoding.aux_tokens, torch.stack([v.aux_tokens for v in by_hand]), **TOL)
    assert encoding.tokens.shape == (3, 2 * len(BASE_STARTS), small_config().latent_dim)
    torch.testing.assert_close(encoding.tokens, torch.stack([v.tokens for v in by_hand]), **TOL)
    torch.testing.assert_close(encoding.direct, torch.stack([v.direct for v in by_hand]), **TOL)
    torch.testing.assert_close(encoding.logits, torch.stack([v.logits for v in by_hand]), **TOL)


def test_q_to_e_delta_and_reverse_e_to_q_delta_match_the_pieces(pair):
    """delta_i = R(C(Q_i attends E_i)), delta_reverse_i = R(C(E_i attends Q_i)), both from the fused tokens."""
    torch.testing.assert_close(pair.output.delta, pair.pieces["delta"], **TOL)
    torch.testing.assert_close(pair.output.delta_reverse, pair.pieces["delta_reverse"], **TOL)


def test_self_differences_match_eq_14_for_each_video(pair):
    """Eq. 14 per video: the base tokens f_M attend to the same video's expanded auxiliary tokens f_N."""
    torch.testing.assert_close(pair.output.self_delta_query, pair.pieces["self_query"], **TOL)
    torch.testing.assert_close(pair.output.self_delta_exemplar, pair.pieces["self_exemplar"], **TOL)


# ------------------------------------------------------------------------------------ the loss terms
def test_loss_terms_use_the_right_targets_for_each_delta_and_both_self_differences():
    """J_reg (Eq. 8) and J_reg^self (Eq. 18) of a batch against plain sums over the pieces' outputs: the Q->E
    delta regressed to s_Q - s_E, the reverse to s_E - s_Q, the direct scores of both videos to their own
    scores, the self-differences of both videos to 0; total = 0.7 J_reg + 3 J_self (other terms off)."""
    loss = LossConfig(reg_weight=0.7, self_weight=3.0, use_cls=False, use_aln=False, use_path_mse=False,
                      use_path_ntxent=False)
    module = make_module(loss)
    query, exemplar = videos(3, seed=21), videos(3, seed=22)
    query_score = torch.tensor([30.0, 25.0, 21.5])  # targets in the model's space (score / DD)
    exemplar_score = torch.tensor([26.0, 27.5, 20.0])
    batch = {"query": query, "exemplar": exemplar, "query_score": query_score, "exemplar_score": exemplar_score,
             "query_label": torch.tensor([0, 1, 2]), "exemplar_label": torch.tensor([0, 1, 2])}
    with torch.no_grad():
        terms = module.loss_terms(batch)
        p = pair_pieces(module.model, query, exemplar)
    squared = []
    for i in range(3):
        sq, se = float(query_score[i]), float(exemplar_score[i])
        squared.append(((float(p["delta"][i]) - (sq - se)) ** 2, (float(p["delta_reverse"][i]) - (se - sq)) ** 2,
                        (float(p["query"][i].direct) - sq) ** 2, (float(p["exemplar"][i].direct) - se) ** 2))
    reg = (sum(s[0] + s[1] for s in squared) + sum(s[2] + s[3] for s in squared)) / 6
    self_reg = sum(float(p["self_query"][i]) ** 2 + float(p["self_exemplar"][i]) ** 2 for i in range(3)) / 6
    assert set(terms) == {"reg", "self", "total"}
    assert float(terms["reg"]) == pytest.approx(reg, rel=1e-5)
    assert float(terms["self"]) == pytest.approx(self_reg, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(0.7 * reg + 3.0 * self_reg, rel=1e-5)


# --------------------------------------------------------------------------------------------- the vote
K = 3
SCORES = torch.tensor([[31.0, 24.5, 28.0], [19.0, 22.5, 35.0]])  # distinct: a mispairing shows
MASK = torch.tensor([[True, False, True], [False, True, True]])  # first and last exemplars masked once


def vote_by_loop(model, query_pieces, exemplar_pieces, scores, mask) -> tuple[list, list, list]:
    """Eq. 11 and Eq. 3 in plain Python: per query, the mean over its unmasked exemplars of s_E + delta(Q, E),
    then (direct + that) / 2. Returns deltas (B x K), contrastive and final scores."""
    deltas, contrastive, final = [], [], []
    for b, query in enumerate(query_pieces):
        row = [float(delta_by_hand(model, query.tokens, exemplar_pieces[b][k].tokens)) for k in range(K)]
        votes = [row[k] + float(scores[b, k]) for k in range(K) if bool(mask[b, k])]
        deltas.append(row)
        contrastive.append(sum(votes) / len(votes))
        final.append((float(query.direct) + contrastive[-1]) / 2)
    return deltas, contrastive, final


@pytest.fixture(scope="module")
def voting():
    """A module, two queries with three exemplars each (frames), and the loop's vote."""
    module = make_module()
    model = module.model
    query = videos(2, seed=31)
    exemplars = torch.stack([videos(K, seed=32), videos(K, seed=33)])  # (B, K, 3, T, H, W)
    with torch.no_grad():
        features_q = [clip_features_by_hand(model, v) for v in query]
        features_e = [[clip_features_by_hand(model, v) for v in row] for row in exemplars]
        q = [encode_by_hand(model, *f) for f in features_q]
        e = [[encode_by_hand(model, *f) for f in row] for row in features_e]
        expected = vote_by_loop(model, q, e, SCORES, MASK)
        unmasked_mean = vote_by_loop(model, q, e, SCORES, torch.ones_like(MASK))[1]
        swapped = vote_by_loop(model, q, e[::-1], SCORES, MASK)[1]
    # the features a feature table would hold, one row per video: queries 0-1, exemplars 2-7
    stored = [torch.cat(f) for f in features_q] + [torch.cat(f) for row in features_e for f in row]
    return SimpleNamespace(module=module, query=query, exemplars=exemplars, expected=expected,
                           unmasked_mean=unmasked_mean, swapped=swapped, stored=torch.stack(stored))


def test_sensitivity_masks_and_pairing_change_the_vote(voting):
    """Guard: counting the masked exemplars, or giving a query the other query's exemplars, moves the vote."""
    _, contrastive, _ = voting.expected
    assert min(abs(a - b) for a, b in zip(contrastive, voting.unmasked_mean)) > 1e-2
    assert min(abs(a - b) for a, b in zip(contrastive, voting.swapped)) > 1e-2


def check_vote(vote: VoteOutput, expected) -> None:
    deltas, contrastive, final = expected
    torch.testing.assert_close(vote.deltas, torch.tensor(deltas), **TOL)
    torch.testing.assert_close(vote.contrastive, torch.tensor(contrastive), **TOL)
    torch.testing.assert_close(vote.score, torch.tensor(final), **TOL)


def test_vote_from_frames_matches_a_loop_over_each_querys_unmasked_exemplars(voting):
    """predict_votes on frames (one backbone call for the 2 queries and their 2 x 3 exemplars) against the loop."""
    batch = {"query": voting.query, "exemplars": voting.exemplars, "exemplar_scores": SCORES,
             "exemplar_mask": MASK}
    with torch.no_grad():
        vote = voting.module.predict_votes(batch)
    check_vote(vote, voting.expected)


def test_vote_from_stored_clip_features_matches_the_loop(voting):
    """predict_votes from a feature table looked up by video id (the evaluation's default path)."""
    table = FeatureTable(8, len(BASE_STARTS) + len(AUX_STARTS), voting.stored.shape[-1])
    ids = torch.tensor([5, 0, 7, 2, 6, 3, 1, 4])  # video v stored under row ids[v]
    table.put(ids, voting.stored)
    batch = {"query_video": ids[:2], "exemplar_videos": ids[2:].reshape(2, K), "exemplar_scores": SCORES,
             "exemplar_mask": MASK}
    voting.module.features = table
    try:
        with torch.no_grad():
            vote = voting.module.predict_votes(batch)
    finally:
        voting.module.features = None
    check_vote(vote, voting.expected)


def test_mean_vote_hand_worked_example_leaves_masked_exemplars_out():
    """Eq. 11 by hand: query 0 keeps exemplars 0 and 2: ((8 + 0.5) + (7 + 2)) / 2 = 8.75; query 1 keeps only
    exemplar 1: 9 - 1 = 8; without a mask the mean runs over all three."""
    deltas = torch.tensor([[0.5, -1.0, 2.0], [1.5, -1.0, 0.25]])
    scores = torch.tensor([[8.0, 9.0, 7.0], [6.0, 9.0, 4.0]])
    mask = torch.tensor([[True, False, True], [False, True, False]])
    torch.testing.assert_close(mean_vote(deltas, scores, mask), torch.tensor([8.75, 8.0]))
    torch.testing.assert_close(mean_vote(deltas, scores), torch.tensor([(8.5 + 8.0 + 9.0) / 3, (7.5 + 8 + 4.25) / 3]))


# ------------------------------------------------------------------------------------- the DD scaling
def test_evaluation_multiplies_each_querys_vote_by_its_own_difficulty(voting):
    """_evaluation_step on the frames batch with DD 2.7 and 3.4: pred = the loop's final score x the query's DD,
    direct and contrastive likewise; the true score stays as annotated."""
    batch = {"query": voting.query, "exemplars": voting.exemplars, "exemplar_scores": SCORES,
             "exemplar_mask": MASK, "scale": torch.tensor([2.7, 3.4], dtype=torch.float64),
             "true_score": torch.tensor([81.0, 85.0], dtype=torch.float64), "index": torch.tensor([4, 9])}
    module = voting.module
    module._outputs["test"] = []
    with torch.no_grad():
        module._evaluation_step(batch, "test")
    rows = module._outputs["test"]
    module._outputs["test"] = []
    _, contrastive, final = voting.expected
    for row, dd, index, true, vote, cr in zip(rows, (2.7, 3.4), (4, 9), (81.0, 85.0), final, contrastive):
        assert (row["index"], row["true"], row["scale"]) == (index, true, dd)
        assert row["pred"] == pytest.approx(vote * dd, rel=1e-5)
        assert row["contrastive"] == pytest.approx(cr * dd, rel=1e-5)
        assert row["direct"] == pytest.approx((2 * vote - cr) * dd, rel=1e-5)


def test_evaluation_scaling_with_hand_computed_numbers(monkeypatch):
    """A vote of 8.25 / 7.5 (direct 8.0 / 7.0, contrastive 8.5 / 8.0) for queries of DD 2.7 / 3.4 is reported as
    22.275 / 25.5 (direct 21.6 / 23.8, contrastive 22.95 / 27.2)."""
    module = make_module()
    vote = VoteOutput(score=torch.tensor([8.25, 7.5]), direct=torch.tensor([8.0, 7.0]),
                      contrastive=torch.tensor([8.5, 8.0]), deltas=torch.zeros(2, K))
    monkeypatch.setattr(module, "predict_votes", lambda batch: vote)
    batch = {"scale": torch.tensor([2.7, 3.4], dtype=torch.float64), "index": torch.tensor([0, 1]),
             "true_score": torch.tensor([20.0, 26.0], dtype=torch.float64)}
    module._evaluation_step(batch, "val")
    rows = module._outputs["val"]
    assert [r["pred"] for r in rows] == pytest.approx([22.275, 25.5])
    assert [r["direct"] for r in rows] == pytest.approx([21.6, 23.8])
    assert [r["contrastive"] for r in rows] == pytest.approx([22.95, 27.2])
    assert [r["true"] for r in rows] == [20.0, 26.0]


def dive(key, score, difficulty) -> Sample:
    return Sample(key=key, score=score, difficulty=difficulty, action_type=f"dd{difficulty}", frames=str(key))


# training samples: two DD pools with their targets score / DD worked out by hand
TRAIN = [dive("a", 81.0, 2.7), dive("b", 67.5, 2.7), dive("c", 54.0, 2.7), dive("d", 40.5, 2.7),
         dive("e", 85.0, 3.4), dive("f", 68.0, 3.4)]
TARGETS = {"a": 30.0, "b": 25.0, "c": 20.0, "d": 15.0, "e": 25.0, "f": 20.0}


def test_training_targets_are_scores_divided_by_difficulty():
    """Each training pair's query and exemplar targets are score / DD (81 / 2.7 = 30, 85 / 3.4 = 25, ...), the
    exemplar from the query's own DD pool and not the query itself; without DD the raw scores."""
    pools = ExemplarPools(TRAIN, "difficulty")
    ids = {s.key_str: i for i, s in enumerate(TRAIN)}
    labels = {name: i for i, name in enumerate(sorted({s.action_type for s in TRAIN}))}
    for divide in (True, False):
        dataset = PairTrainDataset(TRAIN, pools, None, labels, ScoreSpace(divide), seed=5, video_ids=ids,
                                   with_frames=False)
        for index, sample in enumerate(TRAIN):
            item = dataset[(1, index)]
            exemplar = TRAIN[int(item["exemplar_video"])]  # video ids are positions in TRAIN here
            assert item["query_video"] == ids[sample.key_str]
            assert exemplar.difficulty == sample.difficulty and exemplar.key != sample.key
            want_q = TARGETS[sample.key] if divide else sample.score
            want_e = TARGETS[exemplar.key] if divide else exemplar.score
            assert float(item["query_score"]) == pytest.approx(want_q, rel=1e-6)
            assert float(item["exemplar_score"]) == pytest.approx(want_e, rel=1e-6)


def test_voting_items_carry_exemplar_targets_the_query_difficulty_and_its_own_exemplars():
    """K = 3 voting exemplars per test query: from a pool of 4 (DD 2.7) three distinct members, all counted; from
    a pool of 2 (DD 3.4) both plus one masked pad. Exemplar scores are the hand targets (score / DD), the scale
    the query's DD, the true score as annotated; each query gets the exemplars chosen for it."""
    pools = ExemplarPools(TRAIN, "difficulty")
    test = [dive("q1", 70.2, 2.7), dive("q2", 78.2, 3.4), dive("q3", 59.4, 2.7)]
    ids = {s.key_str: i for i, s in enumerate(TRAIN + test)}
    keys = {i: k for k, i in ids.items()}
    chosen = [pools.voting(s, K, seed=7) for s in test]
    dataset = VotingDataset(test, chosen, pools, None, {}, ScoreSpace(True), ids, with_frames=False)
    by_key = {s.key_str: s for s in TRAIN}
    for index, query in enumerate(test):
        item = dataset[(0, index)]
        exemplars = [by_key[keys[int(i)]] for i in item["exemplar_videos"]]
        mask = item["exemplar_mask"].tolist()
        assert item["query_video"] == ids[query.key_str]
        assert item["exemplar_videos"].tolist() == [ids[pools.train[i].key_str] for i in chosen[index][0]]
        assert all(e.difficulty == query.difficulty for e in exemplars)
        kept = [e.key for e, keep in zip(exemplars, mask) if keep]
        if query.difficulty == 2.7:
            assert mask == [True] * K and len(set(kept)) == K
        else:
            assert sorted(kept) == ["e", "f"] and mask.count(False) == 1
        torch.testing.assert_close(item["exemplar_scores"], torch.tensor([TARGETS[e.key] for e in exemplars]))
        assert float(item["scale"]) == query.difficulty
        assert float(item["true_score"]) == query.score


def test_evaluation_scale_is_the_querys_difficulty_when_exemplars_have_other_difficulties():
    """Under data.exemplar_rule=random the exemplars' DD differ from the query's (3.1, in no training pool): the
    item's scale is still the query's 3.1, and each exemplar's score is divided by its own DD."""
    pools = ExemplarPools(TRAIN, "random")
    query = dive("q4", 77.5, 3.1)
    ids = {s.key_str: i for i, s in enumerate([*TRAIN, query])}
    dataset = VotingDataset([query], [pools.voting(query, K, seed=9)], pools, None, {}, ScoreSpace(True), ids,
                            with_frames=False)
    item = dataset[(0, 0)]
    exemplars = [TRAIN[int(i)] for i in item["exemplar_videos"]]  # video ids are positions in TRAIN here
    assert float(item["scale"]) == 3.1 and float(item["true_score"]) == 77.5
    assert item["exemplar_mask"].tolist() == [True] * K
    torch.testing.assert_close(item["exemplar_scores"], torch.tensor([TARGETS[e.key] for e in exemplars]))
