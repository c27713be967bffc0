"""The science code's mutants: each a plausible bug in a loss, the forward pass, the vote, the score scaling,
the metrics, the splits, the feature-store key or a baseline, and the fast tests that kill it.

Read by experiments/mutation_check.py (with its own mutants of reliability, I/O and distributed code):
    python experiments/mutation_check.py --only sdtw-gamma-cost,ntxent-tau-ignored
"""

from mutation_check import Mutant

# the T2CR losses and NT-Xent* under DDP (tests/test_science_losses.py, tests/test_science_ddp.py)
L = "tests/test_science_losses.py::"
DDP = "tests/test_science_ddp.py::"
SDTW = L + "test_soft_dtw_at_gamma_0_7_equals_the_enumeration_of_all_alignment_paths_value_and_gradient[3-4]"
NTX = L + "test_nt_xent_star_at_tau_0_37_equals_a_loop_over_anchors_positives_and_negatives"
NTX_GRAD = L + "test_nt_xent_star_gradient_equals_finite_differences_of_the_loop"
TOTAL = L + "test_every_term_and_the_total_at_non_default_weights_equal_the_independent_computation"
ONE_PATH = L + "test_one_path_output_aligns_the_base_tokens_and_has_no_path_or_self_terms"
NO_HEADS = L + "test_without_direct_score_or_logits_the_regression_is_the_difference_term_only"
PATH_MSE = L + "test_path_mse_hand_worked_mean_over_every_element"
DDP_VALUE = DDP + "test_the_mean_of_the_processes_losses_is_the_global_batch_loss"
DDP_GRAD = DDP + "test_each_process_gets_the_global_batch_gradient_of_its_own_rows"
DDP_T2CR = DDP + "test_t2cr_loss_with_gather_is_the_global_batch_loss_terms_and_token_gradients"

# the model's wiring, the K-exemplar vote and the DD scaling (tests/test_science_model.py)
T = "tests/test_science_model.py::"
FWD_ROLES = T + "test_each_paths_tokens_direct_score_and_logits_match_the_pieces"
DELTAS = T + "test_q_to_e_delta_and_reverse_e_to_q_delta_match_the_pieces"
SELF = T + "test_self_differences_match_eq_14_for_each_video"
LOSS = T + "test_loss_terms_use_the_right_targets_for_each_delta_and_both_self_differences"
VOTE_FRAMES = T + "test_vote_from_frames_matches_a_loop_over_each_querys_unmasked_exemplars"
VOTE_STORED = T + "test_vote_from_stored_clip_features_matches_the_loop"
VOTE_HAND = T + "test_mean_vote_hand_worked_example_leaves_masked_exemplars_out"
EVAL_DD = T + "test_evaluation_multiplies_each_querys_vote_by_its_own_difficulty"
EVAL_DD_HAND = T + "test_evaluation_scaling_with_hand_computed_numbers"
TRAIN_DD = T + "test_training_targets_are_scores_divided_by_difficulty"
SCALE_RANDOM = T + "test_evaluation_scale_is_the_querys_difficulty_when_exemplars_have_other_difficulties"
VOTING_ITEMS = T + "test_voting_items_carry_exemplar_targets_the_query_difficulty_and_its_own_exemplars"

# metrics, splits, the feature-store key and the baselines (tests/test_science_metrics.py, tests/test_science_baselines.py)
M = "tests/test_science_metrics.py::"
B = "tests/test_science_baselines.py::"

# the official code's way, paper_method=t2cr_reference (tests/test_reference_preset.py)
R = "tests/test_reference_preset.py::"
R_TOTAL = R + "test_the_preset_total_is_the_official_codes_loss_term_by_term"
R_FUSION = R + "test_conv_fusion_is_a_1x1_convolution_per_path_then_gated_attention_added_residually"
R_HEADS = R + "test_regressor_gate_token_score_head_and_decoder_without_final_norm"
R_AUX = R + "test_auxiliary_path_heads_read_the_auxiliary_tokens_and_the_final_score_reads_the_base_path"
R_BCE = R + "test_bce_on_softmax_is_binary_cross_entropy_of_the_probabilities_even_where_they_saturate"
R_KEYS = R + "test_the_preset_composes_with_every_experiment_and_switches_only_its_keys[mtl_aqa_dd]"

# data.transform.interpolation: the official code's nearest-neighbour frames (tests/test_transform_interpolation.py)
INTERP = "tests/test_transform_interpolation.py::"
CENTRE = INTERP + "test_nearest_takes_the_source_pixel_under_each_output_pixels_centre"
PIL_REF = INTERP + "test_nearest_equals_the_reference_codes_pil_resize_at_its_frame_size"
REFUSED = INTERP + "test_an_unknown_interpolation_is_refused_naming_the_setting"
NOT_READ = INTERP + "test_a_bilinear_cache_is_not_read_by_a_nearest_run"
NEAREST_CACHE = INTERP + "test_a_nearest_cache_holds_nearest_frames_and_resizes_what_it_lacks_alike"
OLD_CACHE = INTERP + "test_a_cache_from_before_the_option_is_bilinear"
IMPORT = INTERP + "test_imported_videos_are_resized_with_the_configs_interpolation"
PRESETS = INTERP + "test_the_presets_say_where_their_frames_come_from"

DIVING_BOUND = ("tests/test_score_ranges.py::test_both_diving_readers_refuse_a_score_above_the_configured_marks_times_dd"
                "[finediving_dn]")

MUTANTS = (
    # -------------------- the T2CR losses and NT-Xent* under DDP

    # ------------------------------------------------------------------ Soft-DTW (Eq. 10)
    Mutant("sdtw-gamma-cost", "Soft-DTW: the costs are scaled by the default gamma 0.1, not gamma", "losses.py",
           ".div_(-gamma)", ".div_(-0.1)", (SDTW,), slow=False),
    Mutant("sdtw-grad-y-sign", "Soft-DTW: the gradient of y has the sign of x's", "losses.py",
           "per_pair.sum(1).neg_()", "per_pair.sum(1)", (SDTW,), slow=False),
    Mutant("loss-gamma-not-passed", "T2CRLoss: J_aln uses soft_dtw's default gamma, not loss.gamma", "losses.py",
           "torch.cat([e.base_tokens, e.aux_tokens]), cfg.gamma)", "torch.cat([e.base_tokens, e.aux_tokens]))",
           (TOTAL,), slow=False),
    Mutant("loss-gamma-one-path", "T2CRLoss: one-path J_aln uses the default gamma", "losses.py",
           "aln = soft_dtw(q.base_tokens, e.base_tokens, cfg.gamma).mean()",
           "aln = soft_dtw(q.base_tokens, e.base_tokens).mean()", (ONE_PATH,), slow=False),
    Mutant("aln-paths-crossed", "T2CRLoss: J_aln aligns query base with exemplar aux tokens (and vice versa)",
           "losses.py", "torch.cat([e.base_tokens, e.aux_tokens]), cfg.gamma)",
           "torch.cat([e.aux_tokens, e.base_tokens]), cfg.gamma)", (TOTAL,), slow=False),
    # ------------------------------------------------------------------ NT-Xent* (Eq. 16-17)
    Mutant("ntxent-tau-ignored", "NT-Xent*: the temperature is ignored (0.1 always)", "losses.py",
           "    tau = float(tau)\n", "    tau = 0.1\n", (NTX,), slow=False),
    Mutant("ntxent-self-negative", "NT-Xent*: base_j vs itself is kept among the negatives", "losses.py",
           "        self_mask[torch.arange(bsz, device=base.device), own] = True\n", "", (NTX,), slow=False),
    Mutant("ntxent-negatives-aux-only", "NT-Xent*: the base-base negatives are base-aux pairs again", "losses.py",
           "sim_bb = zb @ zb_all.t() / tau", "sim_bb = zb @ za_all.t() / tau", (NTX,), slow=False),
    Mutant("ntxent-positive-mispaired", "NT-Xent*: the positive of anchor j is aux of the next video", "losses.py",
           "positive = sim_ba.gather(1, own.unsqueeze(1)).squeeze(1)",
           "positive = sim_ba.gather(1, own.roll(1).unsqueeze(1)).squeeze(1)", (NTX,), slow=False),
    Mutant("loss-tau-not-passed", "T2CRLoss: NT-Xent* uses the default tau, not loss.tau", "losses.py",
           "video.aux_tokens, cfg.tau, self.gather)", "video.aux_tokens, 0.1, self.gather)", (TOTAL,), slow=False),
    # ------------------------------------------------------------------ NT-Xent* under DDP
    Mutant("ddp-gather-skipped", "NT-Xent* under DDP: the gather is skipped (local batch only)", "losses.py",
           "everyone, first = (torch.cat([zb, za], dim=1), 0) if gather is None else gather(torch.cat([zb, za], dim=1))",
           "everyone, first = (torch.cat([zb, za], dim=1), 0)", (DDP_VALUE, DDP_GRAD), slow=False),
    Mutant("ddp-own-offset", "NT-Xent* under DDP: the positives sit at local row indices of the global batch",
           "losses.py", "own = torch.arange(bsz, device=base.device) + first",
           "own = torch.arange(bsz, device=base.device)", (DDP_VALUE, DDP_GRAD), slow=False),
    Mutant("ddp-gather-detached", "NT-Xent* under DDP: the gathered rows carry no gradient", "losses.py",
           "else gather(torch.cat([zb, za], dim=1))", "else gather(torch.cat([zb, za], dim=1).detach())",
           (DDP_GRAD,), slow=False),
    Mutant("loss-gather-not-passed", "T2CRLoss: NT-Xent* is not given the gather (local batch under DDP)",
           "losses.py", "video.aux_tokens, cfg.tau, self.gather)", "video.aux_tokens, cfg.tau)", (DDP_T2CR,),
           slow=False),
    # ------------------------------------------------------------------ path MSE
    Mutant("path-mse-per-sample-sum", "path MSE: summed per sample (mean over the batch only)", "losses.py",
           "    return F.mse_loss(base, aux)\n", "    return F.mse_loss(base, aux, reduction=\"sum\") / base.shape[0]\n",
           (PATH_MSE, TOTAL), slow=False),
    Mutant("path-videos-summed", "T2CRLoss: the path MSE of query and exemplar is summed, not averaged",
           "losses.py", "path = path + path_mse(video.base_tokens, video.aux_tokens) / 2",
           "path = path + path_mse(video.base_tokens, video.aux_tokens)", (TOTAL,), slow=False),
    Mutant("path-query-only", "T2CRLoss: the path terms cover the query video only", "losses.py",
           "            for video in (q, e):\n", "            for video in (q, q):\n", (TOTAL,), slow=False),
    # ------------------------------------------------------------------ Eq. 19 weights and terms
    Mutant("lambda-self-path-swapped", "Eq. 19: lambda4 and lambda5 swapped", "losses.py",
           '"self": cfg.self_weight, "path": cfg.path_weight}', '"self": cfg.path_weight, "path": cfg.self_weight}',
           (TOTAL,), slow=False),
    Mutant("lambda-reg-ignored", "Eq. 19: lambda1 ignored (1 always)", "losses.py",
           'weights = {"reg": cfg.reg_weight,', 'weights = {"reg": 1.0,', (TOTAL,), slow=False),
    Mutant("total-misses-cls", "Eq. 19: J_cls is missing from the total", "losses.py",
           "for name, value in terms.items())", 'for name, value in terms.items() if name != "cls")',
           (TOTAL,), slow=False),
    Mutant("reg-direct-missing", "J_reg (Eq. 8): the direct-score MSE is left out", "losses.py",
           "        if q.direct is not None:\n", "        if False:\n", (TOTAL,), slow=False),
    Mutant("reg-reverse-ignored", "J_reg: the reverse difference is taken as -delta, delta_reverse unread",
           "losses.py", "deltas = torch.cat([output.delta, output.delta_reverse])",
           "deltas = torch.cat([output.delta, -output.delta])", (TOTAL, NO_HEADS), slow=False),
    Mutant("cls-query-logits-twice", "J_cls: the query's logits are scored against both videos' labels",
           "losses.py", "torch.cat([q.logits, e.logits])", "torch.cat([q.logits, q.logits])", (TOTAL,), slow=False),
    Mutant("self-l1", "J_reg^self (Eq. 18): mean absolute self-difference instead of MSE", "losses.py",
           'terms["self"] = self_delta.pow(2).mean()', 'terms["self"] = self_delta.abs().mean()', (TOTAL,),
           slow=False),
    # -------------------- the model's wiring, the K-exemplar vote and the DD scaling

    Mutant("sci-qe-swapped-one-direction", "the Q->E delta is computed with the exemplar attending the query "
           "(roles swapped in that direction only)", "models/t2cr.py",
           "deltas = self.difference(torch.cat([query.tokens, exemplar.tokens]),",
           "deltas = self.difference(torch.cat([exemplar.tokens, exemplar.tokens]),",
           (DELTAS, LOSS), slow=False),
    Mutant("sci-delta-directions-swapped", "delta and delta_reverse exchanged", "models/t2cr.py",
           "delta=deltas[:b], delta_reverse=deltas[b:]", "delta=deltas[b:], delta_reverse=deltas[:b]",
           (DELTAS, LOSS), slow=False),
    Mutant("sci-reverse-wrong-pair", "the reverse E->Q delta pairs exemplar i with query i-1", "models/t2cr.py",
           "torch.cat([exemplar.tokens, query.tokens]))", "torch.cat([exemplar.tokens, query.tokens.roll(1, 0)]))",
           (DELTAS, LOSS), slow=False),
    Mutant("sci-reverse-negated", "the reverse delta taken as minus the forward one instead of E attending Q",
           "models/t2cr.py", "delta_reverse=deltas[b:]", "delta_reverse=-deltas[:b]",
           (DELTAS, LOSS), slow=False),
    Mutant("sci-self-roles-swapped", "Eq. 14 with the auxiliary path as the decoder's query", "models/t2cr.py",
           "return self.difference(encoding.base_tokens, encoding.aux_tokens)",
           "return self.difference(encoding.aux_tokens, encoding.base_tokens)",
           (SELF, LOSS), slow=False),
    Mutant("sci-self-mispaired", "the query's self-difference is the exemplar's", "models/t2cr.py",
           "self_delta_query=None if self_delta is None else self_delta[:b]",
           "self_delta_query=None if self_delta is None else self_delta[b:]",
           (SELF, LOSS), slow=False),
    Mutant("sci-self-term-drops-exemplar", "J_reg^self covers the query's self-difference only", "losses.py",
           "self_delta = up(torch.cat([output.self_delta_query, output.self_delta_exemplar]))",
           "self_delta = up(output.self_delta_query)",
           (LOSS,), slow=False),
    Mutant("sci-loss-reverse-target", "the reverse delta is regressed to s_Q - s_E instead of s_E - s_Q",
           "losses.py",
           "target_deltas = torch.cat([query_score - exemplar_score, exemplar_score - query_score])",
           "target_deltas = torch.cat([query_score - exemplar_score, query_score - exemplar_score])",
           (LOSS,), slow=False),
    Mutant("sci-aux-path-not-fused", "the fusion gets the base path twice, the auxiliary path is never passed",
           "models/t2cr.py", "tokens = self.fusion(base_tokens, aux_tokens)",
           "tokens = self.fusion(base_tokens, base_tokens)",
           (FWD_ROLES, DELTAS), slow=False),
    Mutant("sci-aux-expansion-skipped", "the auxiliary clips bypass the N -> M expansion", "models/t2cr.py",
           "aux_tokens = self.attention(self.expansion(aux_features))", "aux_tokens = self.attention(aux_features)",
           (FWD_ROLES, SELF), slow=False),
    Mutant("sci-direct-from-fused", "the direct score (Eq. 1) read off the fused tokens instead of f_M",
           "models/t2cr.py", "direct = self.direct_score(base_tokens) if", "direct = self.direct_score(tokens) if",
           (FWD_ROLES, VOTE_FRAMES), slow=False),
    Mutant("sci-clips-mixed-across-videos", "clip features reshaped clip-major: clips land in other videos",
           "models/base.py", "return self.backbone(clips).reshape(v, num_clips, -1)",
           "return self.backbone(clips).reshape(num_clips, v, -1).transpose(0, 1)",
           (FWD_ROLES, DELTAS, VOTE_FRAMES), slow=False),
    Mutant("sci-vote-mask-ignored", "evaluation passes no mask to the vote", "module.py",
           'exemplar_tokens, batch["exemplar_scores"], batch["exemplar_mask"])',
           'exemplar_tokens, batch["exemplar_scores"], None)',
           (VOTE_FRAMES, VOTE_STORED, EVAL_DD), slow=False),
    Mutant("sci-vote-mean-over-k", "the vote divides by K, masked exemplars included", "models/base.py",
           "return (votes * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)",
           "return (votes * weights).sum(dim=1) / votes.shape[1]",
           (VOTE_HAND, VOTE_FRAMES, VOTE_STORED), slow=False),
    Mutant("sci-exemplars-of-another-query", "the B x K exemplars flattened K-major: queries vote with other "
           "queries' exemplars", "module.py", "inputs = torch.cat([queries, exemplars.flatten(0, 1)])",
           "inputs = torch.cat([queries, exemplars.transpose(0, 1).flatten(0, 1)])",
           (VOTE_FRAMES, VOTE_STORED), slow=False),
    Mutant("sci-voting-pairs-interleaved", "voting pairs built K-major: query j % B meets exemplar (j // B)",
           "models/base.py", "queries = query_tokens.unsqueeze(1).expand(b, k, *query_tokens.shape[1:])",
           "queries = query_tokens.unsqueeze(0).expand(k, b, *query_tokens.shape[1:])",
           (VOTE_FRAMES, VOTE_STORED), slow=False),
    Mutant("sci-eq3-direct-dropped", "the final score is s_hat^2 alone, the direct score left out of Eq. 3",
           "models/t2cr.py",
           "score = contrastive if query.direct is None else (query.direct + contrastive) / 2",
           "score = contrastive", (VOTE_FRAMES, VOTE_STORED), slow=False),
    Mutant("sci-dd-not-at-eval", "evaluation reports the vote without multiplying back by the query's DD",
           "module.py", "score, direct, contrastive = (outputs * scale).tolist()",
           "score, direct, contrastive = outputs.tolist()", (EVAL_DD, EVAL_DD_HAND), slow=False),
    Mutant("sci-dd-twice-exemplar-scores", "voting exemplar scores left undivided: with the x DD at the end the "
           "DD is applied twice", "data/datamodule.py",
           '"exemplar_scores": torch.tensor([self.scores.target(e) for e in exemplars]',
           '"exemplar_scores": torch.tensor([e.score for e in exemplars]', (VOTING_ITEMS, SCALE_RANDOM), slow=False),
    Mutant("sci-dd-not-at-training", "the training query target is the raw score, not score / DD",
           "data/datamodule.py", '"query_score": torch.tensor(self.scores.target(query)',
           '"query_score": torch.tensor(query.score', (TRAIN_DD,), slow=False),
    Mutant("sci-dd-scale-of-exemplar", "the evaluation scale is the first exemplar's DD, not the query's",
           "data/datamodule.py", '"scale": torch.tensor(self.scores.scale(sample)',
           '"scale": torch.tensor(self.scores.scale(exemplars[0])', (SCALE_RANDOM, VOTING_ITEMS), slow=False),
    Mutant("sci-voting-items-other-query", "a voting item carries the exemplars chosen for the previous query",
           "data/datamodule.py", "chosen, mask = self.exemplars[index]", "chosen, mask = self.exemplars[index - 1]",
           (VOTING_ITEMS,), slow=False),
    # -------------------- metrics, splits, the feature-store key and the baselines

    # ---------------------------------------------------------------------------------- metrics.py
    Mutant("spearman-no-ties", "Spearman on ordinal ranks: tied values get distinct ranks", "metrics.py",
           "    new_run[1:] = sorted_a[1:] != sorted_a[:-1]\n", "    new_run[1:] = True\n",
           (M + "test_spearman_equals_scipy_spearmanr_on_heavily_tied_scores",
            M + "test_spearman_of_a_hand_ranked_tied_example"), slow=False),
    Mutant("fisher-z-plain-mean", "correlations averaged without Fisher's z (plain mean)", "metrics.py",
           "        return float(np.tanh(np.mean(z)))\n", "        return float(np.mean(r))\n",
           (M + "test_fisher_z_mean_is_tanh_of_the_mean_arctanh",
            M + "test_per_class_metrics_in_score_space_averaged_through_fisher_z"), slow=False),
    Mutant("fisher-z-weights-ignored", "fisher_z_mean ignores its weights", "metrics.py",
           "    return float(np.tanh(np.dot(w, z) / total))\n", "    return float(np.tanh(np.mean(z)))\n",
           (M + "test_fisher_z_mean_with_unequal_weights",), slow=False),
    Mutant("rl2-range-ignored", "relative_l2 ignores the given score range (uses the true scores' span)",
           "metrics.py", "        s_min, s_max = float(score_range[0]), float(score_range[1])\n",
           "        s_min, s_max = float(t.min()), float(t.max())\n",
           (M + "test_relative_l2_divides_by_the_given_score_range",), slow=False),
    Mutant("rl2-range-from-pred", "relative_l2's default range taken from the predictions", "metrics.py",
           "        s_min, s_max = float(t.min()), float(t.max())\n",
           "        s_min, s_max = float(p.min()), float(p.max())\n",
           (M + "test_relative_l2_divides_by_the_given_score_range",), slow=False),
    # ----------------------------------------------------------------------------------- module.py
    Mutant("per-class-fisher-weighted-by-size", "the per-class Fisher-z average weighted by class sizes",
           "module.py",
           '                [m[f"{split}/{n}/spearman"] for n, m in per_group.items()])\n',
           '                [m[f"{split}/{n}/spearman"] for n, m in per_group.items()],\n'
           '                [sum(r["group"] == g for r in rows) for g in groups])\n',
           (M + "test_per_class_metrics_in_score_space_averaged_through_fisher_z",), slow=False),
    Mutant("per-class-plain-mean", "the per-class correlations averaged plainly (no Fisher z)", "module.py",
           '            values[f"{split}/spearman_fisher_z"] = metrics.fisher_z_mean(\n'
           '                [m[f"{split}/{n}/spearman"] for n, m in per_group.items()])\n',
           '            values[f"{split}/spearman_fisher_z"] = sum(\n'
           '                [m[f"{split}/{n}/spearman"] for n, m in per_group.items()]) / len(per_group)\n',
           (M + "test_per_class_metrics_in_score_space_averaged_through_fisher_z",), slow=False),
    Mutant("model-space-true-unscaled", "model-space Spearman ranks the final true scores, not score / DD",
           "module.py", '[round(r["true"] / r["scale"], 9) for r in rows])', '[round(r["true"], 9) for r in rows])',
           (M + "test_per_class_metrics_in_score_space_averaged_through_fisher_z",
            M + "test_evaluation_step_multiplies_the_model_output_back_by_dd"), slow=False),
    Mutant("dd-not-multiplied-back", "evaluation rows keep the model-space output (DD not multiplied back)",
           "module.py", "        score, direct, contrastive = (outputs * scale).tolist()\n",
           "        score, direct, contrastive = outputs.tolist()\n",
           (M + "test_evaluation_step_multiplies_the_model_output_back_by_dd",), slow=False),
    Mutant("module-core-scores-swapped", "the module hands CoRe the query's score as the exemplar's", "module.py",
           '        scores = ({"query_score": batch["query_score"], "exemplar_score": batch["exemplar_score"]}\n',
           '        scores = ({"query_score": batch["exemplar_score"], "exemplar_score": batch["query_score"]}\n',
           (B + "test_core_training_step_passes_the_batchs_exemplar_scores_to_the_tree",), slow=False),
    # ------------------------------------------------------------------------------- data/splits.py
    Mutant("val-carve-from-test", "the validation split carved out of test instead of train", "data/splits.py",
           "        train, val = carve_validation(train, config, dropped=len(dropped_train))\n",
           "        test, val = carve_validation(test, config, dropped=len(dropped_train))\n",
           (M + "test_validation_carve_leaves_test_untouched_and_takes_a_stratified_share_of_train",), slow=False),
    Mutant("val-carve-seed-ignored", "the validation carve ignores data.seed", "data/splits.py",
           'stable_rng(config.seed, "val_split", key)', 'stable_rng(0, "val_split", key)',
           (M + "test_validation_carve_is_a_function_of_the_seed",), slow=False),
    Mutant("val-carve-kept-in-train", "held-out validation samples stay in train", "data/splits.py",
           "    return ([s for i, s in enumerate(train) if i not in held_out],\n", "    return (list(train),\n",
           (M + "test_validation_carve_leaves_test_untouched_and_takes_a_stratified_share_of_train",), slow=False),
    # ---------------------------------------------------------------------------------- features.py
    Mutant("feature-key-no-clip-plan", "the feature store key ignores the clip plan", "features.py",
           '        "clip_frame_indices": clip_frame_indices.tolist(),\n', '        "clip_frame_indices": None,\n',
           (M + "test_feature_store_key_changes_with_the_clip_plan",
            M + "test_feature_store_records_the_papers_clip_plan"), slow=False),
    Mutant("feature-key-clip-shape-only", "the feature store key records only the clip plan's shape",
           "features.py", '        "clip_frame_indices": clip_frame_indices.tolist(),\n',
           '        "clip_frame_indices": list(clip_frame_indices.shape),\n',
           (M + "test_feature_store_key_changes_with_the_clip_plan",), slow=False),
    Mutant("feature-key-aux-plan-ignored", "the feature store key records the base path's clips only",
           "features.py",
           "feature_store_settings(model.backbone, model.clip_frame_indices, datamodule.data_identity(),",
           "feature_store_settings(model.backbone, model.clip_frame_indices[:model.num_base_clips], "
           "datamodule.data_identity(),",
           (M + "test_feature_store_key_changes_with_the_clip_plan",
            M + "test_feature_store_records_the_papers_clip_plan"), slow=False),
    Mutant("feature-key-params-only", "the backbone digest skips buffers (batch-norm statistics)", "features.py",
           "    for name, tensor in sorted(backbone.state_dict().items()):\n",
           "    for name, tensor in sorted(backbone.named_parameters()):\n",
           (M + "test_feature_store_key_follows_the_backbone_weights_and_buffers",), slow=False),
    # ---------------------------------------------------------------------------- baseline_losses.py
    Mutant("gaussian-sigma-ignored", "the soft label's Gaussian ignores sigma", "baseline_losses.py",
           "    log_density = -0.5 * ((positions - centre.double().unsqueeze(-1)) / sigma) ** 2\n",
           "    log_density = -0.5 * (positions - centre.double().unsqueeze(-1)) ** 2\n",
           (B + "test_gaussian_soft_label_is_the_normalised_normal_pdf_at_a_non_default_sigma_and_bin_count",
            B + "test_usdl_loss_is_the_kl_to_gaussians_around_both_scores_in_a_shifted_score_range"), slow=False),
    Mutant("kl-direction-swapped", "KL(prediction || target) instead of KL(target || prediction)",
           "baseline_losses.py",
           "    per_sample = (torch.xlogy(target, target) - target * log_probs).sum(dim=-1)\n",
           "    per_sample = (log_probs.exp() * (log_probs - torch.log(target))).sum(dim=-1)\n",
           (B + "test_kl_to_soft_label_is_kl_of_the_target_to_the_prediction",
            B + "test_usdl_loss_is_the_kl_to_gaussians_around_both_scores_in_a_shifted_score_range"), slow=False),
    Mutant("musdl-marks-sorted", "MUSDL's judge marks sorted before pairing them with the judges' heads",
           "baseline_losses.py", "        judges = torch.cat([query_judges, exemplar_judges]).float()\n",
           "        judges = torch.cat([query_judges, exemplar_judges]).float().sort(dim=-1).values\n",
           (B + "test_musdl_loss_sums_each_judges_kl_against_that_judges_own_distribution",), slow=False),
    Mutant("core-loss-delta-sign", "CoRe's target is exemplar - query in the first pair order",
           "baseline_losses.py",
           "        delta = torch.cat([query_score - exemplar_score, exemplar_score - query_score]).double()\n",
           "        delta = torch.cat([exemplar_score - query_score, query_score - exemplar_score]).double()\n",
           (B + "test_core_loss_targets_the_query_minus_exemplar_difference_in_both_orders",), slow=False),
    # ------------------------------------------------------------------------------ models/usdl.py
    Mutant("usdl-score-min-ignored", "USDL's bins start at 0 whatever score_min is", "models/usdl.py",
           "        return (score - self.config.score_min) / self.bin_width()\n",
           "        return score / self.bin_width()\n",
           (B + "test_usdl_loss_is_the_kl_to_gaussians_around_both_scores_in_a_shifted_score_range",), slow=False),
    Mutant("musdl-judge-min-ignored", "MUSDL's bins start at 0 whatever judge_min is", "models/usdl.py",
           "        return (marks - self.config.judge_min) / self.bin_width()\n",
           "        return marks / self.bin_width()\n",
           (B + "test_musdl_loss_sums_each_judges_kl_against_that_judges_own_distribution",), slow=False),
    Mutant("musdl-middle-three-fixed-drop", "MUSDL keeps sorted [2:5] whatever the number of judges",
           "models/usdl.py", "    drop = (judges.shape[-1] - 3) // 2\n", "    drop = 2\n",
           (B + "test_musdl_prediction_keeps_the_middle_three_of_five_judges",), slow=False),
    # ------------------------------------------------------------------------------ models/core.py
    Mutant("core-tree-gets-query-score", "CoRe's tree reads the query's own score instead of the exemplar's",
           "models/core.py", "                                             torch.cat([exemplar_score, query_score]))\n",
           "                                             torch.cat([query_score, exemplar_score]))\n",
           (B + "test_core_tree_reads_the_exemplars_score_never_the_querys",
            B + "test_core_training_step_passes_the_batchs_exemplar_scores_to_the_tree"), slow=False),
    Mutant("core-group-bounds-off-by-one", "CoRe's quantile index counts len(values) instead of len - 1",
           "models/core.py", "    last = len(values) - 1\n", "    last = len(values)\n",
           (B + "test_core_group_bounds_are_quantiles_of_the_absolute_training_differences",
            B + "test_core_loss_targets_the_query_minus_exemplar_difference_in_both_orders"), slow=False),
    Mutant("core-group-boundary-side", "CoRe's groups take the bound on the other side",
           "models/core.py",
           "    inside = torch.where(d >= 0, (d >= left) & (d < right), (d > left) & (d <= right))\n",
           "    inside = torch.where(d >= 0, (d > left) & (d <= right), (d >= left) & (d < right))\n",
           (B + "test_core_groups_and_positions_on_and_between_the_bounds",), slow=False),
    # ------------------------------------------------------------------------- models/base.py, data
    Mutant("core-vote-mask-ignored", "K-exemplar voting averages the masked padding exemplars too",
           "models/base.py",
           "    return (votes * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)\n",
           "    return votes.mean(dim=1)\n",
           (B + "test_core_vote_is_the_mean_of_exemplar_score_plus_the_difference_read_from_the_best_leaf",),
           slow=False),
    Mutant("core-differences-raw-scores", "CoRe's groups built from final scores, not score / DD",
           "data/datamodule.py", "        targets = [self.scores.target(s) for s in self.pools.train]\n",
           "        targets = [s.score for s in self.pools.train]\n",
           (B + "test_core_groups_come_from_pairs_within_an_exemplar_pool_in_model_space",), slow=False),
    Mutant("core-differences-across-pools", "CoRe's groups built from pairs of any two training samples",
           "data/datamodule.py", "        for members in self.pools.pools.values():\n",
           "        for members in [list(range(len(targets)))]:\n",
           (B + "test_core_groups_come_from_pairs_within_an_exemplar_pool_in_model_space",), slow=False),
    Mutant("model-space-unrounded", "model-space Spearman ranks score / DD unrounded: equal targets part in the "
           "last bit", "module.py", '[round(r["true"] / r["scale"], 9) for r in rows]', '[r["true"] / r["scale"] for r in rows]',
           (M + "test_model_space_spearman_keeps_ties_of_score_over_dd",), slow=False),
    # -------------------- the baselines' score range follows the data (issue 27)
    Mutant("score-range-unchecked", "targets outside data.score_range train (USDL saturates, CoRe's groups invert)",
           "data/datamodule.py", "        refuse_targets_outside(known.splits, self.scores, self.config)\n", "",
           ("tests/test_score_ranges.py::test_t2cr_train_refuses_a_run_whose_targets_leave_the_range",), slow=False),
    Mutant("core-inverted-groups", "CoRe builds a last group that ends before it starts", "models/core.py",
           "    if values[-1] > float(score_range):\n", "    if False:\n",
           ("tests/test_score_ranges.py::test_core_groups_on_the_real_mtl_aqa_without_dd_are_ordered",), slow=False),
    # -------------------- the official code's way (issue 27: paper_method=t2cr_reference)
    Mutant("reference-aux-heads-off", "the reference preset's auxiliary path feeds no head", "models/t2cr.py",
           "if aux_tokens is not None and self.config.aux_path_heads else None",
           "if aux_tokens is not None and False else None", (R_TOTAL, R_AUX), slow=False),
    Mutant("reference-direct-weight-ignored", "loss.direct_weight does not weigh the direct MSE", "losses.py",
           "reg = reg + cfg.direct_weight * F.mse_loss(", "reg = reg + F.mse_loss(", (R_TOTAL,), slow=False),
    Mutant("reference-aux-direct-base-tokens", "the auxiliary path's direct score read from the base tokens",
           "models/t2cr.py", "aux = self.path_heads(aux_tokens) if", "aux = self.path_heads(base_tokens) if",
           (R_TOTAL, R_AUX), slow=False),
    Mutant("reference-bce-unclamped-complement", "BCE on softmax: log(1 - p) from the probability (log(0) where "
           "p rounds to 1)", "losses.py",
           "    log_not_p = torch.logsumexp(others.masked_fill(eye, float(\"-inf\")), dim=2) - log_total\n",
           "    log_not_p = torch.log1p(-log_p.exp())\n", (R_BCE,), slow=False),
    Mutant("reference-bce-as-cross-entropy", "loss.cls_form=bce_softmax computes the cross-entropy", "losses.py",
           "if cfg.cls_form == \"cross_entropy\"", "if True", (R_TOTAL,), slow=False),
    Mutant("reference-simclr-one-anchor", "the symmetric SimCLR form anchors the base path only", "losses.py",
           "        return (nt_xent_star(base, aux, tau, self.gather) + nt_xent_star(aux, base, tau, self.gather)) / 2",
           "        return nt_xent_star(base, aux, tau, self.gather)", (R_TOTAL,), slow=False),
    Mutant("reference-simclr-flattened", "the clip-mean SimCLR form compares flattened tokens", "losses.py",
           "        base, aux = base.mean(dim=1), aux.mean(dim=1)\n", "", (R_TOTAL,), slow=False),
    Mutant("reference-fusion-shared-conv", "the conv fusion mixes the auxiliary clips with the base path's conv",
           "models/two_path.py", "torch.cat([self.base_mix(base), self.aux_mix(aux)], dim=1)",
           "torch.cat([self.base_mix(base), self.base_mix(aux)], dim=1)", (R_FUSION, R_TOTAL), slow=False),
    Mutant("reference-fusion-no-residual", "the conv fusion replaces the tokens by the attention's output",
           "models/two_path.py", "        return tokens + self.attention(tokens)\n",
           "        return self.attention(tokens)\n", (R_FUSION,), slow=False),
    Mutant("reference-self-difference-fused", "the self-difference compares raw paths under the conv fusion",
           "models/t2cr.py", "return self.difference(*self.fusion.each_path(encoding.base_tokens, encoding.aux_tokens))",
           "return self.difference(encoding.base_tokens, encoding.aux_tokens)", (R_FUSION, R_TOTAL), slow=False),
    Mutant("reference-se-ignored", "model.regressor_se builds the gate but the regressor skips it", "models/heads.py",
           "        if self.gate is not None:\n            hidden = self.gate(hidden)\n", "", (R_HEADS, R_TOTAL),
           slow=False),
    Mutant("reference-final-norm-kept", "model.decoder.final_norm=false still normalises", "models/decoder.py",
           "nn.LayerNorm(dim) if final_norm else nn.Identity()", "nn.LayerNorm(dim)", (R_HEADS,), slow=False),
    Mutant("reference-token-score-unweighted", "loss.score_head_weight ignored", "losses.py",
           '"score_head": cfg.score_head_weight}', '"score_head": 1.0}', (R_TOTAL,), slow=False),
    # -------------------- data.transform.interpolation (issue 27: the official code's frames)
    Mutant("interp-nearest-is-bilinear", "resize: nearest falls back to bilinear", "data/transforms.py",
           '    if check_interpolation(interpolation) == "nearest":\n', "    if False:\n",
           (CENTRE, PIL_REF), slow=False),
    Mutant("interp-torch-nearest", "resize: torch's nearest (floor(i * in / out)) instead of PIL's pixel centres",
           "data/transforms.py", "    return torch.from_numpy(np.asarray(picked)[0].astype(np.int64))\n",
           "    return torch.arange(size_out) * size_in // size_out\n", (CENTRE, PIL_REF), slow=False),
    Mutant("interp-not-validated", "TransformConfig accepts any interpolation", "data/transforms.py",
           "    def __post_init__(self) -> None:\n        check_interpolation(self.interpolation)\n",
           "    def __post_init__(self) -> None:\n        pass\n", (REFUSED,), slow=False),
    Mutant("interp-transform-ignores-config", "VideoTransform resizes bilinear whatever its config says",
           "data/transforms.py", "        self.interpolation = check_interpolation(config.interpolation)\n",
           '        self.interpolation = "bilinear"\n', (CENTRE,), slow=False),
    Mutant("interp-cache-method-fixed", "the cache records bilinear whatever the interpolation", "data/cache.py",
           '"resize_method": resize_method(config.transform.interpolation)', '"resize_method": RESIZE_METHOD',
           (NOT_READ,), slow=False),
    Mutant("interp-fallback-bilinear", "CachedFrameSource resizes missing frames bilinear, not with the cache's method",
           "data/cache.py", "        self.interpolation = interpolation_of(settings, self.cache_dir)\n",
           '        self.interpolation = "bilinear"\n', (NEAREST_CACHE,), slow=False),
    Mutant("interp-prepare-bilinear", "prepare_cache stores bilinear frames whatever the interpolation",
           "data/cache.py", "numbers[i:i + chunk]), resize, interpolation)", "numbers[i:i + chunk]), resize)",
           (NEAREST_CACHE,), slow=False),
    Mutant("interp-old-cache-refused", "a cache without resize_method (older t2cr) is not read as bilinear",
           "data/cache.py", '    method = settings.get("resize_method", RESIZE_METHOD)\n',
           '    method = settings.get("resize_method")\n', (OLD_CACHE,), slow=False),
    Mutant("interp-import-bilinear", "the video import resizes bilinear whatever the interpolation",
           "data/video_import.py", "(resize_frames(np.stack(rgbs), resize, interpolation) if rgbs else None)",
           "(resize_frames(np.stack(rgbs), resize) if rgbs else None)", (IMPORT,), slow=False),
    Mutant("finediving-fixed-marks-bound", "the FineDiving reader ignores data.max_score_per_difficulty",
           "data/finediving.py", "    rules = RULES if config is None else dataclasses.replace(",
           "    rules = RULES if True else dataclasses.replace(",
           (DIVING_BOUND,), slow=False),
)
